"""What stays on disk: the MP4s and their settings (output), the Gallery, exports, content credentials and the
LoRA library."""
