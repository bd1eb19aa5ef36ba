"""Networks: the U-Net, the audio encoders, SyncNet; and where the U-Net runs (`runners`,
`int8` quantisation, `onnx_cache`, `runner_factory`)."""
