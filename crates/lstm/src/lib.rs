//! Fused LSTM (being built).
