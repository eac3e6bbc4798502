import math

import torch

from pyg_unimol2.nn import GaussianKernel, SE3InvariantKernel


def test_gaussian_kernel_closed_form():
    torch.manual_seed(0)
    kernel = GaussianKernel()
    assert str(kernel) == 'GaussianKernel(128, start=0.0, stop=9.0)'
    assert torch.equal(kernel.mean, torch.linspace(0, 9, 128))
    assert 'mean' in kernel.state_dict()  # persistent buffer
    assert abs(kernel.std - 9 / 127) < 1e-7
    assert kernel.mul.weight.shape == kernel.bias.weight.shape == (512, 1)
    assert kernel.mul.weight[0] == 0 and kernel.bias.weight[0] == 0

    with torch.no_grad():  # negative scales: |.| must come before the sum
        kernel.mul.weight.uniform_(-2, 2)
        kernel.bias.weight.uniform_(-1, 1)
    dist = torch.rand(2, 3, 3) * 6
    pair_type = torch.randint(1, 512, (2, 3, 3, 2))
    out = kernel(dist, pair_type)
    assert out.shape == (2, 3, 3, 128) and out.dtype == torch.float32

    m, b = kernel.mul.weight[:, 0], kernel.bias.weight[:, 0]
    t0, t1 = pair_type[..., 0], pair_type[..., 1]
    y = (m[t0].abs() + m[t1].abs()) * dist + b[t0] + b[t1]
    mu = torch.arange(128) * 9 / 127
    sigma = 9 / 127
    ref = (torch.exp(-(y[..., None].double() - mu)**2 / (2 * sigma**2)) /
           (math.sqrt(2 * 3.14159) * sigma))
    assert torch.allclose(out.double(), ref, rtol=1e-4, atol=1e-5)


def test_gaussian_kernel_float32_for_half_inputs():
    kernel = GaussianKernel(16, 8)
    out = kernel(torch.rand(4, dtype=torch.bfloat16),
                 torch.randint(1, 8, (4, 2)))
    assert out.dtype == torch.float32


def test_se3_invariant_kernel():
    torch.manual_seed(0)
    kernel = SE3InvariantKernel(32)
    assert str(kernel) == 'SE3InvariantKernel(32, num_kernels=128)'
    names = set(dict(kernel.named_parameters()))
    assert names == {
        'gaussian.mul.weight', 'gaussian.bias.weight',
        'out_proj.layer1.weight', 'out_proj.layer1.bias',
        'out_proj.layer2.weight', 'out_proj.layer2.bias'
    }
    dist = torch.rand(2, 5, 5) * 5
    pair_type = torch.randint(1, 512, (2, 5, 5, 2))
    out = kernel(dist, pair_type)
    assert out.shape == (2, 5, 5, 32)
    g = kernel.gaussian(dist, pair_type)
    l1, l2 = kernel.out_proj.layer1, kernel.out_proj.layer2
    ref = l2(torch.nn.functional.gelu(l1(g), approximate='none'))
    assert torch.allclose(out, ref, atol=1e-6)
