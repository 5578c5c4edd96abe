//! `bridge run`: the long-running service (scheduler, inbox, hot reload,
//! metrics) in one process.
