//! SS-MIX2 standardized storage for Renkei.
