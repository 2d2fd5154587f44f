//! Test harness: every test gets its own database on a real PostgreSQL
//! server (`server.rs`); rows are written as apps write them (`rows.rs`);
//! workers run in the test process (`worker.rs`) or as `opsrunner`
//! processes (`process.rs`); `wait.rs` waits with deadlines.
#![allow(dead_code, unused_imports)]

mod process;
mod proxy;
mod roles;
mod rows;
mod server;
mod wait;
mod worker;

pub use process::*;
pub use proxy::*;
pub use roles::*;
pub use rows::*;
pub use server::*;
pub use wait::*;
pub use worker::*;
