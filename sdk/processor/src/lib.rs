//! Guest SDK for Silt processors (being written).
#![no_std]
