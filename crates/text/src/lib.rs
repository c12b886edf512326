//! Text pipeline (being built).
