"""The models: V (ConvVAE), M (MDN-RNN) and C (the controller)."""
