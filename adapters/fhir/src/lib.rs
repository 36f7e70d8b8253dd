//! FHIR R4 for Renkei.
