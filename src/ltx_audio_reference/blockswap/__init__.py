"""Training-time block swap: frozen base weights streamed host-to-device around each block."""
