//! placeholder

pub mod aem;
