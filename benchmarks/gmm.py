"""Speed of the GMM bottleneck loss ``ssl3d.gmm.gmm_nll`` (full covariance), forward + backward.

The reference, measured in the same run on the same inputs, is the straightforward implementation (kept
unchanged, so that the ratio stays honest): the equations written literally (covariance from the (B, N, J, 3)
tensor of differences x_i − μ_j) and the likelihood from one ``torch.distributions.MultivariateNormal(μ_j,
Σ_j).log_prob`` per component, + log π, logsumexp over components. Parameters, losses and gradients of both are
checked to agree (float64) first, and the float32 errors of both against float64 are printed. Targets (issue
16), printed beside each ratio: fwd + bwd ≥ 10× the reference at N 1024, J 64 and ≥ 5× at every size.

    .venv/bin/python benchmarks/gmm.py            # B = 32, N ∈ {512, 1024, 2048} × J ∈ {16, 32, 64}
    .venv/bin/python benchmarks/gmm.py --quick    # 5 of the 9 sizes, ≤ 10 rounds / 30 s (< 1 min on 2 cores)

Timings are the minimum over interleaved rounds (robust to other processes sharing the CPU); the median is
printed beside it. On a machine shared with other jobs, ``--threads 1`` avoids OpenMP threads spinning while
they wait for a busy core (which inflates 2-thread timings by up to 10×).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch.distributions import MultivariateNormal

from ssl3d.gmm import DEFAULT_EPS, DEFAULT_MASS_FLOOR, gmm_nll, gmm_params

# issue 16: fwd + bwd ≥ 10× the literal reference at B 32, N 1024, J 64, and ≥ 5× at every benchmarked size
TARGETS, DEFAULT_TARGET = {(1024, 64): 10.0}, 5.0


# ----------------------------------------------------------------------------------------------------------
# The straightforward reference
# ----------------------------------------------------------------------------------------------------------
def reference_params(points: torch.Tensor, logits: torch.Tensor):
    """Eqs. (1)-(5) written literally: returns pi (B, J), mu (B, J, 3), cov (B, J, 3, 3)."""
    gamma = torch.softmax(logits, dim=-1)  # (B, N, J)
    mass = gamma.sum(1)  # (B, J)
    pi = mass / points.shape[1]
    denom = mass.clamp_min(DEFAULT_MASS_FLOOR)
    mu = gamma.transpose(1, 2) @ points / denom.unsqueeze(-1)  # (B, J, 3)
    diff = points.unsqueeze(2) - mu.unsqueeze(1)  # (B, N, J, 3)
    cov = torch.einsum("bnjk,bnjl->bjkl", gamma.unsqueeze(-1) * diff, diff) / denom[..., None, None]
    return pi, mu, cov + DEFAULT_EPS * torch.eye(3, dtype=points.dtype)


def reference_nll(points: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    pi, mu, cov = reference_params(points, logits)
    comps = [MultivariateNormal(mu[:, j, None, :], covariance_matrix=cov[:, j, None],
                                validate_args=False).log_prob(points)  # (B, N)
             for j in range(pi.shape[1])]
    joint = torch.stack(comps, -1) + pi.log().unsqueeze(1)  # (B, N, J)
    return -torch.logsumexp(joint, -1).mean()


def ours_params_only(points, logits):
    p = gmm_params(points, logits, cov="full")
    return p.mu.sum() + p.cov.sum() + p.log_pi.sum()


def reference_params_only(points, logits):
    pi, mu, cov = reference_params(points, logits)
    return mu.sum() + cov.sum() + pi.log().sum()


# ----------------------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------------------
def inputs(b: int, n: int, j: int, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    points = torch.randn(b, n, 3, generator=g, dtype=dtype)
    logits = 2 * torch.randn(b, n, j, generator=g, dtype=dtype)
    return points, logits


def time_rounds(fns: dict, sizes: list, b: int, rounds: int, budget_s: float) -> tuple[dict, int]:
    """Seconds of loss = fn(points, logits); loss.backward() for every (size, fn), as lists of timings.

    Every round times every function at every size once (after a warm-up round), so a burst of load from
    another process spreads over all entries instead of spoiling one row. Stops after ``rounds`` rounds, or
    earlier once ``budget_s`` has passed (at least 3 rounds).
    """
    data = {size: inputs(b, *size) for size in sizes}
    times = {(size, name): [] for size in sizes for name in fns}
    start, done = time.perf_counter(), 0
    for r in range(rounds + 1):
        for size in sizes:
            points, logits = data[size]
            for name, fn in fns.items():
                lg = logits.detach().requires_grad_(True)
                t0 = time.perf_counter()
                fn(points, lg).backward()
                if r > 0:
                    times[size, name].append(time.perf_counter() - t0)
        done = r
        if r >= 3 and time.perf_counter() - start > budget_s:
            break
    return times, done


def check_float32() -> None:
    """How far float32 lands from float64, for gmm_nll and for the reference (sharp partitions of unit clouds)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 512, 3, generator=g, dtype=torch.float64)
    x = x / x.norm(dim=-1, keepdim=True).amax(1, keepdim=True)
    logits = -1000 * torch.cdist(x, x[:, :32]) ** 2  # 32 parts, median logit gap ≈ 18 nats
    out = []
    for name, fn in (("gmm_nll", gmm_nll), ("reference", reference_nll)):
        res = {}
        for dt in (torch.float32, torch.float64):
            lg = logits.to(dt).detach().clone().requires_grad_(True)
            loss = fn(x.to(dt), lg)
            loss.backward()
            res[dt] = (loss.item(), lg.grad.double())
        (l32, g32), (l64, g64) = res[torch.float32], res[torch.float64]
        out.append(f"{name} loss {abs(l32 - l64) / abs(l64):.0e}, grad {float((g32 - g64).norm() / g64.norm()):.0e}")
    print("float32 vs float64 (relative errors; B=4 N=512 J=32, sharp partitions): " + "; ".join(out))


def check_agreement() -> None:
    points, logits = inputs(4, 256, 16, dtype=torch.float64)
    p = gmm_params(points, logits, cov="full")
    pi, mu, cov = reference_params(points, logits)
    dparam = max(float((a - b).abs().max()) for a, b in ((p.pi, pi), (p.mu, mu), (p.cov, cov)))
    out = []
    for fn in (gmm_nll, reference_nll):
        lg = logits.detach().requires_grad_(True)
        loss = fn(points, lg)
        loss.backward()
        out.append((loss.item(), lg.grad))
    dl, dg = abs(out[0][0] - out[1][0]), float((out[0][1] - out[1][1]).abs().max())
    print(f"agreement (float64, B=4 N=256 J=16): max |Δparam| = {dparam:.1e}, |Δloss| = {dl:.1e}, "
          f"max |Δgrad| = {dg:.1e}")
    assert dparam < 1e-10 and dl < 1e-10 and dg < 1e-10, "gmm_nll and the reference disagree"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5 sizes, ≤ 10 rounds or 30 s (default: 9 sizes, ≤ 25 rounds)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    b = args.batch
    rounds, budget = (10, 30.0) if args.quick else (25, 300.0)
    sizes = [(1024, j) for j in (16, 32, 64)] + [(n, 32) for n in (512, 2048)] if args.quick else \
        [(n, j) for n in (512, 1024, 2048) for j in (16, 32, 64)]
    print(f"torch {torch.__version__}, CPU, {torch.get_num_threads()} threads, float32, B={b}, full covariance, "
          f"forward+backward; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    check_agreement()
    check_float32()

    fns = {"ours": gmm_nll, "ref": reference_nll, "ours_xi": ours_params_only, "ref_xi": reference_params_only}
    times, done = time_rounds(fns, sizes, b, rounds, budget)
    best = {key: min(v) for key, v in times.items()}
    med = {key: statistics.median(v) for key, v in times.items()}
    print(f"min (median) over {done} interleaved rounds")
    print("\n    N    J   gmm_nll ms        reference ms      speed-up   target      ξ only: ours / reference ms")
    for size in sizes:
        n, j = size
        speedup = best[size, "ref"] / best[size, "ours"]
        target = TARGETS.get(size, DEFAULT_TARGET)
        print(f"{n:5d} {j:4d} {best[size, 'ours'] * 1e3:7.1f} ({med[size, 'ours'] * 1e3:6.1f})  "
              f"{best[size, 'ref'] * 1e3:7.1f} ({med[size, 'ref'] * 1e3:6.1f})  "
              f"{speedup:6.1f}×   ≥ {target:2.0f}× {'met' if speedup >= target else 'MISSED':6s}  "
              f"{best[size, 'ours_xi'] * 1e3:8.1f} / {best[size, 'ref_xi'] * 1e3:.1f}")

    def ratio(name, a, c):
        return best[c, name] / best[a, name]

    print("\nscaling (time ratio when the size doubles; 2.00 = linear):")
    for name, label in (("ours", "gmm_nll  "), ("ref", "reference")):
        print(f"  {label}  N 512→1024→2048 at J=32: ×{ratio(name, (512, 32), (1024, 32)):.2f} "
              f"×{ratio(name, (1024, 32), (2048, 32)):.2f}   J 16→32→64 at N=1024: "
              f"×{ratio(name, (1024, 16), (1024, 32)):.2f} ×{ratio(name, (1024, 32), (1024, 64)):.2f}")


if __name__ == "__main__":
    main()
