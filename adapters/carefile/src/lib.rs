//! Care offices' files for Renkei.
