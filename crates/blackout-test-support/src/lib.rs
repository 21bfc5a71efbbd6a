//! Helpers shared by the tests that run real servers.
