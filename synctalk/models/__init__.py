"""Networks: the U-Net, the audio encoders, SyncNet."""
