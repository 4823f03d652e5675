"""The engine's named choices, in a module that imports nothing heavy: the command line lists them in --help
without loading torch."""

MEMORY_MODES = ("auto", "none", "model", "group", "sequential")
# attention backend name on the command line -> diffusers' attention backend
ATTENTION_BACKENDS: dict[str, str] = {
    "native": "native",  # torch scaled_dot_product_attention, whatever kernel torch picks
    "flash": "flash",  # flash-attn 2 package
    "flash3": "_flash_3",  # flash-attn 3 (Hopper) package
    "sage": "sage",  # sageattention package
    "cudnn": "_native_cudnn",  # torch SDPA forced to the cuDNN kernel
}
REFINE_BACKENDS = ("rules", "local", "openai")
QUANTIZE_TYPES = ("none", "int8", "fp8")  # quantize on load (engine/models/storage.py)
TEXT_ENCODER_DEVICES = ("auto", "cpu")
FILE_NAMINGS = ("prompt", "plain")  # how finished videos are named (output.video_stems)
