"""qbench.parts on real names: GPU kernels as torch.profiler shows them (cuBLAS, CUTLASS,
flash and memory-efficient attention, cuDNN, PyTorch's eager kernels, Inductor's Triton
kernels, qbench's own Triton kernels) and CPU ops. Kernel names are copied from profiles
and Inductor output published in PyTorch issues and projects' docs; C++ template
arguments are shortened where marked with `...`."""

import pytest

from qbench.parts import FORWARD, QUANTIZED_LAYER, RULES, explain, part_of, part_of_name

NAMES = [
    # --- GEMM: cuBLAS, CUTLASS, aten's matmuls, Inductor templates, qbench's Triton GEMM
    ("sm90_xmma_gemm_f16f16_f16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_segment_k_off_kernel__5x_cublas", "gemm"),
    ("nvjet_hsh_256x128_64x4_1x2_h_bz_coopA_NTT", "gemm"),
    ("ampere_fp16_s1688gemm_fp16_128x128_ldg8_f2f_stages_32x1_tn", "gemm"),
    ("void cutlass::Kernel2<cutlass_80_tensorop_i16832gemm_s8_256x128_64x3_tn_align16>(T1::Params)", "gemm"),
    ("cutlass_75_tensorop_i8816gemm_s8_128x128_tn_align16", "gemm"),
    ("sm80_xmma_gemm_i8i8_i32i32_i32_tn_n_tilesize128x128x64_stage3_warpsize2x2x1_tensor16x8x32_kernel", "gemm"),
    ("void cublasLt::splitKreduce_kernel<32, 16, int, float, float, float, float, true, false, false>"
     "(cublasLt::cublasSplitKParams<float>, float const*, ...)", "gemm"),
    ("void cutlass::device_kernel<at::cuda::detail::enable_3x_kernel_for_sm9x<cutlass::gemm::kernel::GemmUniversal<"
     "cute::tuple<int, int, int, int>, ... cutlass::float_e4m3_t, ... cutlass::FloatRoundStyle)2 ...>>>(...)", "gemm"),
    ("ampere_sgemm_32x128_tn", "gemm"),
    ("triton_tem_fused_mm_0", "gemm"),
    ("triton_tem_fused__int_mm_mul_0", "gemm"),  # the GEMM with its dequantizing epilogue
    ("triton_poi_fused_mm_0", "gemm"),  # a small matmul Inductor wrote as a loop
    ("_w8a8_gemm_kernel", "gemm"),
    ("w8a8_gemm", "gemm"),
    ("aten::mm", "gemm"),
    ("aten::addmm", "gemm"),
    ("aten::bmm", "gemm"),
    ("aten::_int_mm", "gemm"),
    ("aten::_scaled_mm", "gemm"),
    ("aten::linear", "gemm"),
    ("aten::matmul", "gemm"),
    # --- attention: before GEMM, since flash and memory-efficient kernels carry cutlass
    ("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128, 128, 4, false, false, cutlass::half_t, "
     "Flash_kernel_traits<64, 128, 128, 4, cutlass::half_t> >, false, true, false, false, true, true, false, false>"
     "(pytorch_flash::Flash_fwd_params)", "attention"),
    ("fmha_cutlassF_f16_aligned_64x64_rf_sm80(PyTorchMemEffAttention::AttentionKernel<cutlass::half_t, "
     "cutlass::arch::Sm80, true, 64, 64, 64, true, true>::Params)", "attention"),
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7_64x128x128_4x1x1_kernel0_0", "attention"),
    ("void at::native::(anonymous namespace)::cunn_SoftMaxForward<4, c10::Half, float, c10::Half, "
     "at::native::(anonymous namespace)::SoftMaxForwardEpilogue>(c10::Half*, c10::Half const*, int)", "attention"),
    ("triton_per_fused__softmax_0", "attention"),
    ("aten::scaled_dot_product_attention", "attention"),
    ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention"),
    ("aten::_efficient_attention_forward", "attention"),
    # --- quantization: Inductor's fused quantize kernels, whatever else they fuse
    ("triton_per_fused__to_copy_abs_amax_clamp_div_round_6", "quantization"),
    ("triton_red_fused__to_copy_abs_amax_clamp_clamp_min_div_round_1", "quantization"),
    ("triton_red_fused__to_copy_abs_amax_mul_silu_0", "quantization"),  # SwiGLU's product, quantized
    ("triton_red_fused__to_copy_abs_add_amax_clamp_div_mean_mul_pow_round_rsqrt_4", "quantization"),  # RMSNorm + quant
    ("triton_per_fused__to_copy_abs_amax_clamp_div_opaque_gemm_squeeze_view_0", "quantization"),  # named after its GEMM
    ("triton_poi_fused__to_copy_clamp_div_round_1", "quantization"),
    ("cpp_fused__to_copy_abs_amax_clamp_div_round_0", "quantization"),
    # qbench's Triton kernels: norm or activation fused with quantization
    ("_quantize_rows_kernel", "quantization"),
    ("_rmsnorm_quant_kernel", "quantization"),
    ("silu_mul_quant", "quantization"),
    # PyTorch's eager kernels of per-token quantization
    ("void at::native::vectorized_elementwise_kernel<4, at::native::AbsFunctor<c10::Half>, std::array<char*, 2ul> >"
     "(int, at::native::AbsFunctor<c10::Half>, std::array<char*, 2ul>)", "quantization"),
    ("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<c10::Half, at::native::func_wrapper_t<c10::Half, "
     "at::native::MaxNanFunctor<c10::Half> >, unsigned int, c10::Half, 4, 4> >(...)", "quantization"),
    ("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<c10::Half, at::native::func_wrapper_t<c10::Half, "
     "at::native::max_values_kernel_cuda_impl<c10::Half, c10::Half>(at::TensorIterator&)::{lambda(c10::Half, "
     "c10::Half)#1}>, unsigned int, c10::Half, 4, 4> >(...)", "quantization"),
    ("void at::native::vectorized_elementwise_kernel<(int)4, at::native::<unnamed>::launch_clamp_scalar("
     "at::TensorIteratorB...", "quantization"),
    ("void at::native::vectorized_elementwise_kernel<(int)4, at::native::round_kernel_cuda(at::TensorIteratorBase &)"
     "::[lambda() (instance 1)]::operator ()() const::[lambda() (instance 2…", "quantization"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::BinaryFunctor<float, float, float, "
     "at::native::binary_internal::DivFunctor<float> >, std::array<char*, 3ul> >(...)", "quantization"),
    ("aten::abs", "quantization"),
    ("aten::amax", "quantization"),
    ("aten::round", "quantization"),
    ("aten::clamp", "quantization"),
    ("aten::clamp_min", "quantization"),
    ("aten::div", "quantization"),
    # --- elementwise and norms
    ("triton_red_fused__to_copy_add_mean_mul_pow_rsqrt_0", "elementwise"),  # RMSNorm
    ("triton_poi_fused__to_copy_add_mul_3", "elementwise"),  # dequantize + residual: a name cannot tell
    ("triton_poi_fused_add_cat_mul_neg_1", "elementwise"),  # rotary embedding
    ("triton_poi_fused_mul_silu_2", "elementwise"),
    ("cpp_fused_add_mean_mul_pow_rsqrt_0", "elementwise"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<c10::Half>, std::array<char*, 3ul> >"
     "(int, at::native::CUDAFunctor_add<c10::Half>, std::array<char*, 3ul>)", "elementwise"),
    ("void at::native::unrolled_elementwise_kernel<at::native::direct_copy_kernel_cuda(at::TensorIteratorBase&)::"
     "{lambda()#3}::operator()() const::{lambda()#7}::operator()() const::{lambda(float)#1}, std::array<char*, 2ul>, "
     "4, TrivialOffsetCalculator<1, unsigned int>, ...>(...)", "elementwise"),
    ("void at::native::elementwise_kernel<(int)128, (int)4, void at::native::gpu_kernel_impl<at::native::<unnamed>::"
     "pow_tensor_tensor_kernel(at...", "elementwise"),
    ("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::MeanOps<float, float, float, "
     "float>, unsigned int, c10::Half, 4, 4> >(...)", "elementwise"),
    ("void at::native::(anonymous namespace)::CatArrayBatchedCopy_aligned16_contig<at::native::(anonymous namespace)::"
     "OpaqueType<2u>, unsigned int, 4, 128, 1>(...)", "elementwise"),
    ("aten::mul", "elementwise"),
    ("aten::add", "elementwise"),
    ("aten::pow", "elementwise"),
    ("aten::mean", "elementwise"),
    ("aten::rsqrt", "elementwise"),
    ("aten::silu", "elementwise"),
    ("aten::cat", "elementwise"),
    ("aten::to", "elementwise"),
    ("aten::copy_", "elementwise"),
    ("aten::div_", "elementwise"),  # in-place: mean's division by the count, not quantization
    # --- other: runtime copies and fills, views and allocations, wrappers
    ("Memcpy DtoD (Device -> Device)", "other"),
    ("Memset (Device)", "other"),
    ("aten::view", "other"),
    ("aten::reshape", "other"),
    ("aten::transpose", "other"),
    ("aten::t", "other"),
    ("aten::empty_strided", "other"),
    ("## Call CompiledFxGraph fmqmx3qo76khqiy3ilu7ocdtjpxrux3t7weymlgzrmxkla ##", "other"),
    ("## Call CompiledFxGraph fabsgemmflashquant ##", "other"),  # whatever its hash spells
    ("Torch-Compiled Region: 0/1", "other"),
    ("TorchDynamo Cache Lookup", "other"),
    (FORWARD, "other"),
]  # fmt: skip


@pytest.mark.parametrize("name, part", NAMES, ids=[n[:60] for n, _ in NAMES])
def test_real_names_by_name_alone(name, part):
    assert part_of_name(name) == part, explain(name)


EAGER_COPY_KERNEL = next(n for n, _ in NAMES if "direct_copy_kernel_cuda" in n)
CUBLAS = NAMES[0][0]


@pytest.mark.parametrize(
    "name, scopes, part",
    [
        # an eager cast to int8 is a plain copy kernel: inside a quantized layer it is quantization
        (EAGER_COPY_KERNEL, ["aten::copy_", "aten::_to_copy", "aten::to", QUANTIZED_LAYER, FORWARD], "quantization"),
        (EAGER_COPY_KERNEL, ["aten::copy_", "aten::_to_copy", "aten::to", FORWARD], "elementwise"),
        ("aten::mul", [QUANTIZED_LAYER, FORWARD], "quantization"),  # the dequantizing multiply
        (QUANTIZED_LAYER, [FORWARD], "quantization"),  # the host time inside the layer
        (CUBLAS, ["aten::_int_mm", QUANTIZED_LAYER, FORWARD], "gemm"),  # its GEMM stays GEMM
        ("Memset (Device)", ["aten::mm", "aten::matmul", "aten::linear", FORWARD], "gemm"),  # cuBLAS's workspace
        ("aten::t", ["aten::linear", FORWARD], "gemm"),
        # the math backend of SDPA: its bmm and softmax are attention
        ("aten::bmm", ["aten::_scaled_dot_product_attention_math", "aten::scaled_dot_product_attention"], "attention"),
        (CUBLAS, ["aten::bmm", "aten::_scaled_dot_product_attention_math", "aten::scaled_dot_product_attention"],
         "attention"),
        # ranges that are not ops say nothing: a Triton kernel under Inductor's wrapper ranges
        ("triton_poi_fused_add_0", ["triton_poi_fused_add_0", "## Call CompiledFxGraph fsdpaquant ##"], "elementwise"),
    ],
)  # fmt: skip
def test_scopes(name, scopes, part):
    assert part_of(name, scopes) == part


def test_every_rule_says_why_and_is_used():
    assert all(rule.why for rule in RULES)
    used = {explain(name) for name, _ in NAMES}
    assert len([u for u in used if u.startswith("rule ")]) == len(RULES)  # the table exercises every rule
