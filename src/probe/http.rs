//! TODO(helper): http
