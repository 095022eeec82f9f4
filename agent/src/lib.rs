//! Homecontrol agent library.
pub mod config;
pub mod registers;
pub mod tomlfile;
