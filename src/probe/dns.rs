//! TODO(helper): dns
