//! TODO(helper): icmp
