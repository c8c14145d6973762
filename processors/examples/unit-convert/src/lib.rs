//! Example processor (being written).
#![no_std]
