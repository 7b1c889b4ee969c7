//! Protocols and transports: callback-driven TCP, UDP and Unix servers and clients.
