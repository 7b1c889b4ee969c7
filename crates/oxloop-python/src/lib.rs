//! `oxloop._oxloop`: the native part of the Python package `oxloop`.
//!
//! - `LoopCore` (`loop_core.rs`): the base class of `oxloop.Loop`, an oxloop event loop
//!   with asyncio's scheduling methods;
//! - `Handle`, `TimerHandle` (`handle.rs`): asyncio's handles as native objects;
//! - `StreamTransport` (`transport.rs`): asyncio's TCP/Unix transport on the core's;
//! - `LogSink` (`log.rs`): the outputs of `oxloop-log` for `oxloop.handlers.Log`;
//! - `running.rs`: which thread may touch a loop, the GIL around the kernel wait, and
//!   the exception that leaves `run_forever`;
//! - `web.rs`, `asgi.rs`, `websocket.rs`, `wsgi.rs`: ASGI (HTTP and WebSocket) and WSGI
//!   applications served by oxloop-http;
//! - `task_reader.rs`, `green_socket.rs`: a green socket's fd callback, wait, receive
//!   and send (`oxloop.green`);
//! - `ffi.rs`: the few CPython calls that need `unsafe`.

#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod asgi;
#[allow(unsafe_code)] // the CPython calls PyO3 does not wrap, each with its SAFETY note
mod ffi;
mod green_socket;
mod handle;
mod log;
mod loop_core;
#[allow(unsafe_code)] // `Send`/`Sync` for GIL-guarded cells, the GIL token in callbacks
mod running;
mod task_reader;
mod transport;
mod web;
mod websocket;
mod wsgi;

use pyo3::prelude::*;

/// The native module: `LoopCore`, `Handle`, `TimerHandle`.
#[pymodule]
fn _oxloop(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<loop_core::LoopCore>()?;
    m.add_class::<handle::Handle>()?;
    m.add_class::<handle::TimerHandle>()?;
    m.add_class::<transport::StreamTransport>()?;
    m.add_class::<task_reader::TaskReader>()?;
    m.add_function(wrap_pyfunction!(green_socket::_socket_recv, m)?)?;
    m.add_function(wrap_pyfunction!(green_socket::_socket_send, m)?)?;
    m.add_class::<log::LogSink>()?;
    m.add_class::<web::WebServer>()?;
    m.add_function(wrap_pyfunction!(asgi::_serve_asgi, m)?)?;
    m.add_function(wrap_pyfunction!(wsgi::_serve_wsgi, m)?)?;
    Ok(())
}
