//! TODO(helper): tcp
