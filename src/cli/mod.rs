//! The binary's command layer: argument types and everything the program
//! prints; the library returns values.

pub mod bench;
