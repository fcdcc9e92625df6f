//! One framed transport for both roles: the server's connection engine and the client
//! run their sockets through it.

mod guard;

pub(crate) use guard::guarded;
