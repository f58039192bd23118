//! Unit tests of the memory broker, written against the `Broker` trait.
