//! PING workflow 1.1
