//! Host runtime for Silt processors (being written).
