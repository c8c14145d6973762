//! silt-client
