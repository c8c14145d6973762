//! silt-broker
