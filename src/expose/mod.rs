//! expose
