"""brainvlm: fine-tune and evaluate LLaVA-family vision-language models on medical images."""

__version__ = "0.1.0"


def _name_the_cpu_accelerator() -> None:
    """DeepSpeed, on a machine without a GPU, warns at import that it "set the accelerator to CPU" and could not
    detect a GPU. Named beforehand (``DS_ACCELERATOR=cpu``, DeepSpeed's own setting), it chooses the CPU quietly.
    Only on Linux machines with no NVIDIA device; a setting the user gave stays."""
    import glob
    import os
    import sys

    if sys.platform.startswith("linux") and "DS_ACCELERATOR" not in os.environ and not glob.glob("/dev/nvidia[0-9]*"):
        os.environ["DS_ACCELERATOR"] = "cpu"


_name_the_cpu_accelerator()
