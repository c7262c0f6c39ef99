"""Dense bf16 tensor-core peaks of GPUs, by the exact name ``torch.cuda.get_device_name``
reports (as ``nvidia-smi`` prints it), for the bench's model FLOP utilisation.

Values are NVIDIA's data-sheet figures without sparsity (the sheets print twice these "with
sparsity"), at the board's full power. The name decides, never a substring of it: an H100
PCIe (756 TFLOP/s) or NVL (835) is not an H100 SXM (989), and a GPU missing here gets no MFU
figure (the bench says why) rather than a wrong one; add its exact name and data-sheet value.
"""

from __future__ import annotations

#: Exact device name → dense bf16 TFLOP/s.
PEAK_BF16_TFLOPS = {
    # Blackwell
    "NVIDIA B200": 2250.0,
    "NVIDIA GB200": 2500.0,
    # Hopper
    "NVIDIA H100 80GB HBM3": 989.0,  # SXM5
    "NVIDIA H100 PCIe": 756.0,
    "NVIDIA H100 NVL": 835.0,
    "NVIDIA H200": 989.0,  # SXM
    "NVIDIA H200 NVL": 835.0,
    "NVIDIA H800": 989.0,  # SXM
    "NVIDIA H800 PCIe": 756.0,
    "NVIDIA GH200 480GB": 989.0,
    "NVIDIA H20": 148.0,
    # Ampere
    "NVIDIA A100-SXM4-40GB": 312.0,
    "NVIDIA A100-SXM4-80GB": 312.0,
    "NVIDIA A100-PCIE-40GB": 312.0,
    "NVIDIA A100 80GB PCIe": 312.0,
    "NVIDIA A800-SXM4-80GB": 312.0,
    "NVIDIA A800 80GB PCIe": 312.0,
    "NVIDIA A10": 125.0,
    # Ada
    "NVIDIA L40S": 362.0,
    "NVIDIA L40": 181.0,
    "NVIDIA L4": 121.0,
}


def peak_bf16_flops(name: str) -> float | None:
    """The dense bf16 peak of the GPU called exactly ``name``, in FLOP/s; ``None`` if unknown."""
    tflops = PEAK_BF16_TFLOPS.get(name.strip())
    return None if tflops is None else tflops * 1e12
