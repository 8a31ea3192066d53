"""Numba kernels of the mMTP: site energies and their derivatives by one reverse sweep.

For every atom i the forward pass builds the radial functions
f_mu(r, m_i, m_j) of each neighbour, the basic moments
sum_j f_mu u_x^a u_y^b u_z^c and the products of ``times``; the reverse pass
carries dV_i/d(moment) back to every neighbour pair. One sweep gives the site
energy, dV_i/d(r_ij) for every pair (forces and virial), dV_i/dm for the
central atom and each neighbour (magnetic forces), and dV_i/dtheta.

Per pair, the angular monomials u_x^a u_y^b u_z^c are formed once in the
forward pass, each from one of lower degree (:func:`monomial_tables`), kept for
the reverse pass and shared by the basic moments of the same rank. Every loop
over monomials runs over contiguous runs (:func:`sweep_runs`): the monomials of
one degree as u_x, u_y or u_z times a range of those of the degree below, and
the basic moments of one radial function as f_mu times a range of monomials.
Such a loop reads and writes contiguous ranges, so it compiles to vector
instructions; the same loops through index tables (gathers) ran one element at
a time, each add waiting for the one before. The reverse pass forms dV/du
backwards through the same runs (children before parents), and the tangent
sweep forwards.

Sums are compiled with ``fastmath={'reassoc', 'contract'}``: a sum over a run may
be split into vector lanes and use fused multiply-adds. That moves results at
round-off (1e-15 relative), and assumes nothing about NaN or infinities.

Pair arrays are written per pair and scattered serially afterwards, so the
atom loop is free of races and runs in parallel (``prange`` over chunks).

:func:`loss_batch`, the fitting loss of ``loss.py`` over many configurations,
lives here too: numba keys each cached function on the content of its own file,
so a kernel in another file that calls :func:`site_block` would keep running an
outdated sweep after a change here (``tests/test_engine_has_no_aiida.py`` checks
that no cached kernel calls one of another module).
"""

from __future__ import annotations

import numba as nb
import numpy as np

# reassoc: sums over a run split into vector lanes; contract: fused multiply-adds (module docstring)
_JIT = {'cache': True, 'nogil': True, 'error_model': 'numpy', 'fastmath': {'reassoc', 'contract'}}


@nb.njit(inline='always', **_JIT)
def _chebyshev(x, n, out, dout):
    """T_k(x) and dT_k/dx for k < n."""
    out[0] = 1.0
    dout[0] = 0.0
    if n > 1:
        out[1] = x
        dout[1] = 1.0
    for k in range(2, n):
        out[k] = 2.0 * x * out[k - 1] - out[k - 2]
        dout[k] = 2.0 * out[k - 1] + 2.0 * x * dout[k - 1] - dout[k - 2]


@nb.njit(**_JIT)
def monomial_tables(basic):
    """The angular monomials u_x^a u_y^b u_z^c of degree a + b + c <= the largest of ``basic`` (K of them), in
    order of degree and, within one degree, of a then b descending.

    Returns ``powers`` (K, 3) (a, b, c of each), ``of_basic`` (n_basic,) (the monomial of each basic moment,
    ``basic[q, 1:]``), ``parent`` (K,) and ``axis`` (K,): monomial k is monomial ``parent[k]`` times u[axis[k]],
    along the first axis with a nonzero power (monomial 0 is 1; parents are of one degree less). Basic moments
    that share a monomial (the same tensor rank, other radial functions mu) then share its value and its
    derivative: the sweep works per monomial, not per basic moment. In this order the monomials of degree n with
    a > 0 are, in order, u_x times all those of degree n - 1, so parents and children form long contiguous runs.
    """
    n_basic = basic.shape[0]
    max_pow = 0
    for q in range(n_basic):
        max_pow = max(max_pow, basic[q, 1] + basic[q, 2] + basic[q, 3])
    lookup = np.full((max_pow + 1, max_pow + 1, max_pow + 1), -1, dtype=np.int64)
    n_mono = 0
    for n in range(max_pow + 1):
        for a in range(n, -1, -1):
            for b in range(n - a, -1, -1):
                lookup[a, b, n - a - b] = n_mono
                n_mono += 1
    powers = np.zeros((n_mono, 3), dtype=np.int64)
    parent = np.zeros(n_mono, dtype=np.int64)
    axis = np.zeros(n_mono, dtype=np.int64)
    for a in range(max_pow + 1):
        for b in range(max_pow + 1 - a):
            for c in range(max_pow + 1 - a - b):
                k = lookup[a, b, c]
                powers[k, 0] = a
                powers[k, 1] = b
                powers[k, 2] = c
                if a > 0:
                    parent[k] = lookup[a - 1, b, c]
                elif b > 0:
                    parent[k] = lookup[a, b - 1, c]
                    axis[k] = 1
                elif c > 0:
                    parent[k] = lookup[a, b, c - 1]
                    axis[k] = 2
    of_basic = np.zeros(n_basic, dtype=np.int64)
    for q in range(n_basic):
        of_basic[q] = lookup[basic[q, 1], basic[q, 2], basic[q, 3]]
    return powers, of_basic, parent, axis


@nb.njit(**_JIT)
def contiguous_runs(index, key):
    """The positions i with ``index[i] >= 0`` as runs over which the index climbs by one with i, at one ``key``:
    rows ``(i0, index[i0], length, key)`` (R, 4). A loop over one run reads and writes two contiguous ranges,
    which the compiler turns into vector instructions; through a table's gathers it cannot."""
    n = index.shape[0]
    runs = np.zeros((n, 4), dtype=np.int64)
    r = -1
    for i in range(n):
        if index[i] < 0:
            continue
        if r >= 0:
            ln = runs[r, 2]
            if i == runs[r, 0] + ln and index[i] == runs[r, 1] + ln and key[i] == runs[r, 3]:
                runs[r, 2] = ln + 1
                continue
        r += 1
        runs[r, 0] = i
        runs[r, 1] = index[i]
        runs[r, 2] = 1
        runs[r, 3] = key[i]
    return runs[: r + 1].copy()


@nb.njit(**_JIT)
def sweep_runs(basic, of_basic, parent, axis):
    """The sweep's loops over monomials as :func:`contiguous_runs`, unsigned (an index k0 + t then needs no
    wrap-around of negative values, and the loops vectorise).

    Returns ``by_mu`` (n_basic,), the basic moments in order of radial function mu and, within one, of monomial;
    ``build`` (k0, parent0, length, axis): monomials k0 + t are monomials parent0 + t times u[axis]; ``moments``
    (s0, k0, length, mu): basic moments s0 + t (in ``by_mu`` order) are f_mu times monomials k0 + t.
    For level 16: 18 build runs (three per degree) and 4 moment runs (one per mu) over 130 basic moments.
    """
    by_mu = np.argsort(basic[:, 0] * (of_basic.max() + 1) + of_basic, kind='mergesort')
    index = parent.copy()
    index[0] = -1  # monomial 0 is 1
    build = contiguous_runs(index, axis)
    moments = contiguous_runs(of_basic[by_mu], basic[by_mu, 0])
    return by_mu, build.astype(np.uint64), moments.astype(np.uint64)


@nb.njit(inline='always', **_JIT)
def _monomials(u, build, mono):
    """Every monomial ``mono[k]`` at the unit vector ``u`` (3,), run by run of ``build`` (:func:`sweep_runs`)."""
    mono[0] = 1.0
    for r in range(build.shape[0]):
        k0 = build[r, 0]
        q0 = build[r, 1]
        ua = u[build[r, 3]]
        for t in range(build[r, 2]):
            mono[k0 + t] = mono[q0 + t] * ua


@nb.njit(inline='always', **_JIT)
def _monomial_tangents(mono, u, build, du, tmono):
    """``tmono[k]``: the change of monomial k along the change ``du`` (3,) of the unit vector ``u`` (3,), forward
    through ``build``: d(parent u_a) = d(parent) u_a + parent du_a."""
    tmono[0] = 0.0
    for r in range(build.shape[0]):
        k0 = build[r, 0]
        q0 = build[r, 1]
        ua = u[build[r, 3]]
        dua = du[build[r, 3]]
        for t in range(build[r, 2]):
            tmono[k0 + t] = tmono[q0 + t] * ua + mono[q0 + t] * dua


@nb.njit(inline='always', **_JIT)
def _monomial_slopes(mono, u, build, wk, g):
    """``g`` (3,) = sum_k wk[k] d(monomial k)/du, backwards through ``build`` (children before parents): the
    weight of a child passes to its parent times u_a, and to u_a times the parent. Overwrites ``wk``."""
    g[0] = 0.0
    g[1] = 0.0
    g[2] = 0.0
    for r in range(build.shape[0] - 1, -1, -1):
        k0 = build[r, 0]
        q0 = build[r, 1]
        ua = u[build[r, 3]]
        gr = 0.0
        for t in range(build[r, 2]):
            w = wk[k0 + t]
            gr += w * mono[q0 + t]
            wk[q0 + t] += w * ua
        g[build[r, 3]] += gr


@nb.njit(**_JIT)
def site_block(
    start, stop,
    types, moments, offsets, nbr, vec,
    rc, sc, xi, basic, times, mapping, n_moments,
    r_min, r_cut, scaling, mag_min, mag_max,
    need_grad, need_forces,
    site_e, pair_dvec, pair_dm, own_dm, grad,
    tangent, dvec, dm, grad_t,
):  # fmt: skip
    """Evaluate atoms ``start <= i < stop`` (see module docstring).

    Outputs: ``site_e[i]`` (eV); ``pair_dvec[p]`` = dV_i/d(vec_p) (eV/A, (P, 3)), only with ``need_forces``
    (without: the sweep skips W, dV/du and the pair forces, what moment equilibration at fixed atoms does not use);
    ``pair_dm[p]`` = dV_i/dm_j for the neighbour j of pair p (eV/mu_B);
    ``own_dm[i]`` = dV_i/dm_i; ``grad`` (n_params,) += dV_i/dtheta when ``need_grad``.

    With ``tangent`` (which needs ``need_grad``): ``grad_t`` (n_params,) +=
    d/dt [dV_i/dtheta] along the perturbation vec_p -> vec_p + t dvec[p],
    m -> m + t dm (forward mode through the whole sweep). The force, stress
    and magnetic-force terms of the fitting loss are such directional
    derivatives, so this gives their exact parameter gradient.
    """
    n_species = rc.shape[0]
    n_mu = rc.shape[2]
    n_phi = rc.shape[3]
    n_psi = rc.shape[4]
    n_times = times.shape[0]
    n_alpha = mapping.shape[0]
    n_radial = rc.size
    n_basic = basic.shape[0]
    powers, of_basic, parent, axis = monomial_tables(basic)
    by_mu, build, mruns = sweep_runs(basic, of_basic, parent, axis)
    n_mono = powers.shape[0]
    max_nb = 0
    for i in range(start, stop):
        if offsets[i + 1] - offsets[i] > max_nb:
            max_nb = offsets[i + 1] - offsets[i]

    mom = np.zeros(n_moments)
    adj = np.zeros(n_moments)
    fval = np.zeros((max_nb, n_mu))
    fdr = np.zeros((max_nb, n_mu))
    fdmj = np.zeros((max_nb, n_mu))
    fdmi = np.zeros((max_nb, n_mu))
    qval = np.zeros((max_nb, n_phi))
    psij = np.zeros((max_nb, n_psi))
    tb = np.zeros(n_phi)
    dtb = np.zeros(n_phi)
    psi_i = np.zeros(n_psi)
    dpsi_i = np.zeros(n_psi)
    dpsi_j = np.zeros(n_psi)
    cc = np.zeros((n_species, n_mu, n_psi, n_phi))  # b last: the sums over the radial basis vectorise
    dcc = np.zeros((n_species, n_mu, n_psi, n_phi))
    acc = np.zeros((n_species, n_mu, n_phi, n_psi))
    mono_p = np.zeros((max_nb, n_mono))  # the monomials of each pair, formed in the forward pass
    u_p = np.zeros((max_nb, 4))  # each pair's unit vector and 1/r
    mom_s = np.zeros(n_basic)  # the basic moments, in the order of by_mu
    adj_s = np.zeros(n_basic)  # dV/d(basic moment), in the order of by_mu
    wk = np.zeros(n_mono)  # W_k of the reverse pass: the weight of monomial k in dV/du
    g3 = np.zeros(3)  # dV/du of one pair
    dvdf = np.zeros(n_mu)
    nt = max_nb if tangent else 0
    dmom = np.zeros(n_moments if tangent else 0)
    dadj = np.zeros(n_moments if tangent else 0)
    dmom_s = np.zeros(n_basic if tangent else 0)  # in the order of by_mu, as mom_s
    dadj_s = np.zeros(n_basic if tangent else 0)
    tmono_p = np.zeros((nt, n_mono))  # the change of each pair's monomials along the tangent
    df = np.zeros((nt, n_mu))
    qder = np.zeros((max_nb, n_phi))
    dpsij = np.zeros((nt, n_psi))
    du = np.zeros((nt, 3))
    tpsi_i = np.zeros(n_psi)
    dacc = np.zeros((n_species, n_mu, n_phi, n_psi))
    ddvdf = np.zeros(n_mu)
    span = r_cut - r_min
    magnetic = n_psi > 1
    along_r = need_forces or tangent

    for i in range(start, stop):
        zi = types[i]
        p0 = offsets[i]
        p1 = offsets[i + 1]
        # magnetic basis of the central atom, contracted into the coefficients
        if magnetic:
            w = 2.0 / (mag_max[zi] - mag_min[zi])
            _chebyshev(
                (2.0 * moments[i] - (mag_min[zi] + mag_max[zi])) / (mag_max[zi] - mag_min[zi]), n_psi, psi_i, dpsi_i
            )
            for ii in range(n_psi):
                dpsi_i[ii] *= w
        else:
            psi_i[0] = 1.0
            dpsi_i[0] = 0.0
        for zj in range(n_species):
            for mu in range(n_mu):
                for b in range(n_phi):
                    for jj in range(n_psi):
                        s0 = 0.0
                        s1 = 0.0
                        for ii in range(n_psi):
                            c = rc[zi, zj, mu, b, ii, jj]
                            s0 += c * psi_i[ii]
                            s1 += c * dpsi_i[ii]
                        cc[zj, mu, jj, b] = s0
                        dcc[zj, mu, jj, b] = s1
        for k in range(n_basic):
            mom_s[k] = 0.0
        if tangent:
            for ii in range(n_psi):
                tpsi_i[ii] = dpsi_i[ii] * dm[i]
            for k in range(n_basic):
                dmom_s[k] = 0.0
        # forward pass over neighbours
        for p in range(p0, p1):
            lp = p - p0
            j = nbr[p]
            zj = types[j]
            x = vec[p, 0]
            y = vec[p, 1]
            z = vec[p, 2]
            r = np.sqrt(x * x + y * y + z * z)
            inv_r = 1.0 / r
            _chebyshev((2.0 * r - (r_min + r_cut)) / span, n_phi, tb, dtb)
            cut = r_cut - r
            wq = scaling * cut * cut
            dwq = -2.0 * scaling * cut
            if magnetic:
                wm = 2.0 / (mag_max[zj] - mag_min[zj])
                _chebyshev(
                    (2.0 * moments[j] - (mag_min[zj] + mag_max[zj])) / (mag_max[zj] - mag_min[zj]),
                    n_psi,
                    psij[lp],
                    dpsi_j,
                )
                for jj in range(n_psi):
                    dpsi_j[jj] *= wm
            else:
                psij[lp, 0] = 1.0
                dpsi_j[0] = 0.0
            for b in range(n_phi):
                qval[lp, b] = tb[b] * wq
            if along_r:  # without, qder stays zero: no derivative along r is asked for
                for b in range(n_phi):
                    qder[lp, b] = dtb[b] * (2.0 / span) * wq + tb[b] * dwq
            for mu in range(n_mu):
                f = 0.0
                fr = 0.0
                fmj = 0.0
                fmi = 0.0
                # per psi_j: the sums over the radial basis Q_b (with dQ_b/dr, and with dc/dm_i), then psi_j
                for jj in range(n_psi):
                    cq = 0.0
                    cqd = 0.0
                    dcq = 0.0
                    for b in range(n_phi):
                        c = cc[zj, mu, jj, b]
                        cq += c * qval[lp, b]
                        cqd += c * qder[lp, b]
                        dcq += dcc[zj, mu, jj, b] * qval[lp, b]
                    pj = psij[lp, jj]
                    f += pj * cq
                    fr += pj * cqd
                    fmj += dpsi_j[jj] * cq
                    fmi += pj * dcq
                fval[lp, mu] = f
                fdr[lp, mu] = fr
                fdmj[lp, mu] = fmj
                fdmi[lp, mu] = fmi
            ux = x * inv_r
            uy = y * inv_r
            uz = z * inv_r
            u_p[lp, 0] = ux
            u_p[lp, 1] = uy
            u_p[lp, 2] = uz
            u_p[lp, 3] = inv_r
            mono = mono_p[lp]
            _monomials(u_p[lp], build, mono)
            for r in range(mruns.shape[0]):
                s0 = mruns[r, 0]
                k0 = mruns[r, 1]
                f = fval[lp, mruns[r, 3]]
                for t in range(mruns[r, 2]):
                    mom_s[s0 + t] += f * mono[k0 + t]
            if tangent:
                dr = ux * dvec[p, 0] + uy * dvec[p, 1] + uz * dvec[p, 2]
                du[lp, 0] = (dvec[p, 0] - ux * dr) * inv_r
                du[lp, 1] = (dvec[p, 1] - uy * dr) * inv_r
                du[lp, 2] = (dvec[p, 2] - uz * dr) * inv_r
                for b in range(n_phi):
                    qder[lp, b] *= dr
                for jj in range(n_psi):
                    dpsij[lp, jj] = dpsi_j[jj] * dm[j]
                for mu in range(n_mu):
                    df[lp, mu] = fdr[lp, mu] * dr + fdmj[lp, mu] * dm[j] + fdmi[lp, mu] * dm[i]
                tmono = tmono_p[lp]
                _monomial_tangents(mono, u_p[lp], build, du[lp], tmono)
                for r in range(mruns.shape[0]):
                    s0 = mruns[r, 0]
                    k0 = mruns[r, 1]
                    f = fval[lp, mruns[r, 3]]
                    dfm = df[lp, mruns[r, 3]]
                    for t in range(mruns[r, 2]):
                        dmom_s[s0 + t] += dfm * mono[k0 + t] + f * tmono[k0 + t]
        for k in range(n_moments):
            mom[k] = 0.0
        for s in range(n_basic):
            mom[by_mu[s]] = mom_s[s]
        for t in range(n_times):
            mom[times[t, 3]] += times[t, 2] * mom[times[t, 0]] * mom[times[t, 1]]
        if tangent:
            for k in range(n_moments):
                dmom[k] = 0.0
            for s in range(n_basic):
                dmom[by_mu[s]] = dmom_s[s]
            for t in range(n_times):
                ti = times[t, 0]
                tj = times[t, 1]
                dmom[times[t, 3]] += times[t, 2] * (dmom[ti] * mom[tj] + mom[ti] * dmom[tj])
        e = sc[zi]
        for k in range(n_moments):
            adj[k] = 0.0
        for a in range(n_alpha):
            e += xi[a] * mom[mapping[a]]
            adj[mapping[a]] += xi[a]
        site_e[i] = e
        # reverse pass
        for t in range(n_times - 1, -1, -1):
            g = times[t, 2] * adj[times[t, 3]]
            if g != 0.0:
                adj[times[t, 0]] += g * mom[times[t, 1]]
                adj[times[t, 1]] += g * mom[times[t, 0]]
        if tangent:
            for k in range(n_moments):
                dadj[k] = 0.0
            for t in range(n_times - 1, -1, -1):
                ti = times[t, 0]
                tj = times[t, 1]
                g = times[t, 2] * adj[times[t, 3]]
                dg = times[t, 2] * dadj[times[t, 3]]
                dadj[ti] += dg * mom[tj] + g * dmom[tj]
                dadj[tj] += dg * mom[ti] + g * dmom[ti]
        if need_grad:
            for zj in range(n_species):
                for mu in range(n_mu):
                    for b in range(n_phi):
                        for jj in range(n_psi):
                            acc[zj, mu, b, jj] = 0.0
                            dacc[zj, mu, b, jj] = 0.0
        for s in range(n_basic):
            adj_s[s] = adj[by_mu[s]]
        if tangent:
            for s in range(n_basic):
                dadj_s[s] = dadj[by_mu[s]]
        dmi = 0.0
        for p in range(p0, p1):
            lp = p - p0
            zj = types[nbr[p]]
            mono = mono_p[lp]
            # dV/df_mu = sum of adj * monomial over the basic moments of mu; dV/du = sum_k W_k dmonomial_k/du with
            # W_k = sum of f_mu * adj over the basic moments whose monomial is k
            if need_forces:
                for k in range(n_mono):
                    wk[k] = 0.0
            for mu in range(n_mu):
                dvdf[mu] = 0.0
            for r in range(mruns.shape[0]):
                s0 = mruns[r, 0]
                k0 = mruns[r, 1]
                mu = mruns[r, 3]
                dv = 0.0
                for t in range(mruns[r, 2]):
                    dv += adj_s[s0 + t] * mono[k0 + t]
                dvdf[mu] += dv
                if need_forces:
                    f = fval[lp, mu]
                    for t in range(mruns[r, 2]):
                        wk[k0 + t] += f * adj_s[s0 + t]
            if need_forces:
                _monomial_slopes(mono, u_p[lp], build, wk, g3)
            gx = g3[0]
            gy = g3[1]
            gz = g3[2]
            ux = u_p[lp, 0]
            uy = u_p[lp, 1]
            uz = u_p[lp, 2]
            inv_r = u_p[lp, 3]
            gu = gx * ux + gy * uy + gz * uz
            drad = 0.0
            dmj = 0.0
            for mu in range(n_mu):
                drad += dvdf[mu] * fdr[lp, mu]
                dmj += dvdf[mu] * fdmj[lp, mu]
                dmi += dvdf[mu] * fdmi[lp, mu]
            if need_forces:
                pair_dvec[p, 0] = drad * ux + (gx - gu * ux) * inv_r
                pair_dvec[p, 1] = drad * uy + (gy - gu * uy) * inv_r
                pair_dvec[p, 2] = drad * uz + (gz - gu * uz) * inv_r
            pair_dm[p] = dmj
            if need_grad:
                for mu in range(n_mu):
                    d = dvdf[mu]
                    for b in range(n_phi):
                        dq = d * qval[lp, b]
                        for jj in range(n_psi):
                            acc[zj, mu, b, jj] += dq * psij[lp, jj]
            if tangent:
                tmono = tmono_p[lp]
                for mu in range(n_mu):
                    ddvdf[mu] = 0.0
                for r in range(mruns.shape[0]):
                    s0 = mruns[r, 0]
                    k0 = mruns[r, 1]
                    dd = 0.0
                    for t in range(mruns[r, 2]):
                        dd += dadj_s[s0 + t] * mono[k0 + t] + adj_s[s0 + t] * tmono[k0 + t]
                    ddvdf[mruns[r, 3]] += dd
                for mu in range(n_mu):
                    for b in range(n_phi):
                        along_psi = ddvdf[mu] * qval[lp, b] + dvdf[mu] * qder[lp, b]
                        along_dpsi = dvdf[mu] * qval[lp, b]
                        for jj in range(n_psi):
                            dacc[zj, mu, b, jj] += along_psi * psij[lp, jj] + along_dpsi * dpsij[lp, jj]
        own_dm[i] = dmi
        if need_grad:
            # radial coefficients [zi, zj, mu, b, ii, jj] (C order)
            for zj in range(n_species):
                for mu in range(n_mu):
                    for b in range(n_phi):
                        for ii in range(n_psi):
                            base = ((((zi * n_species + zj) * n_mu + mu) * n_phi + b) * n_psi + ii) * n_psi
                            for jj in range(n_psi):
                                grad[base + jj] += acc[zj, mu, b, jj] * psi_i[ii]
                                if tangent:
                                    grad_t[base + jj] += (
                                        dacc[zj, mu, b, jj] * psi_i[ii] + acc[zj, mu, b, jj] * tpsi_i[ii]
                                    )
            grad[n_radial + zi] += 1.0
            for a in range(n_alpha):
                grad[n_radial + n_species + a] += mom[mapping[a]]
                if tangent:
                    grad_t[n_radial + n_species + a] += dmom[mapping[a]]


@nb.njit(**_JIT)
def scatter(a0, a1, offsets, nbr, vec, pair_dvec, pair_dm, own_dm):
    """Forces (n, 3), virial (6,) and dE/dm (n,) of atoms a0 <= i < a1 from the pair arrays.

    The virial is -sum_p dV/dvec_p (x) vec_p, symmetrised, Voigt xx yy zz yz xz xy (eV). An empty ``pair_dvec``
    (no forces asked for) leaves forces and virial zero.
    """
    n = a1 - a0
    forces = np.zeros((n, 3))
    dedm = own_dm[a0:a1].copy()
    virial = np.zeros(6)
    with_forces = pair_dvec.shape[0] > 0
    for i in range(a0, a1):
        for p in range(offsets[i], offsets[i + 1]):
            j = nbr[p] - a0
            dedm[j] += pair_dm[p]
            if not with_forces:
                continue
            for k in range(3):
                forces[i - a0, k] += pair_dvec[p, k]
                forces[j, k] -= pair_dvec[p, k]
            virial[0] -= pair_dvec[p, 0] * vec[p, 0]
            virial[1] -= pair_dvec[p, 1] * vec[p, 1]
            virial[2] -= pair_dvec[p, 2] * vec[p, 2]
            virial[3] -= 0.5 * (pair_dvec[p, 1] * vec[p, 2] + pair_dvec[p, 2] * vec[p, 1])
            virial[4] -= 0.5 * (pair_dvec[p, 0] * vec[p, 2] + pair_dvec[p, 2] * vec[p, 0])
            virial[5] -= 0.5 * (pair_dvec[p, 0] * vec[p, 1] + pair_dvec[p, 1] * vec[p, 0])
    return forces, virial, dedm


@nb.njit(parallel=True, **_JIT)
def evaluate_atoms(
    n_chunks,
    types, moments, offsets, nbr, vec,
    rc, sc, xi, basic, times, mapping, n_moments,
    r_min, r_cut, scaling, mag_min, mag_max,
    need_grad, n_params, need_forces=True,
):  # fmt: skip
    """All atoms of one configuration, atoms split into ``n_chunks`` parallel chunks; without ``need_forces``,
    forces and virial are returned as zeros (moment equilibration: energy, dE/dm and dE/dtheta only).

    Returns ``(site_e (N,), forces (N, 3), virial (6,), dedm (N,), grad (n_params,), grads (n_chunks, n_params))``
    with ``virial`` = -sum_p dV/dvec_p (x) vec_p in Voigt order (eV), ``dedm`` = dE/dm (eV/mu_B), and ``grads``
    the parameter gradient of each chunk's site energies (with ``n_chunks`` = N: dV_i/dtheta of each atom).
    """
    n = types.shape[0]
    n_pairs = nbr.shape[0]
    site_e = np.zeros(n)
    pair_dvec = np.zeros((n_pairs if need_forces else 0, 3))
    pair_dm = np.zeros(n_pairs)
    own_dm = np.zeros(n)
    grads = np.zeros((n_chunks, n_params if need_grad else 0))
    no_dvec = np.zeros((0, 3))
    no_dm = np.zeros(0)
    chunk = (n + n_chunks - 1) // n_chunks
    for c in nb.prange(n_chunks):
        start = c * chunk
        stop = min(n, start + chunk)
        if start < stop:
            site_block(
                start, stop, types, moments, offsets, nbr, vec,
                rc, sc, xi, basic, times, mapping, n_moments,
                r_min, r_cut, scaling, mag_min, mag_max,
                need_grad, need_forces, site_e, pair_dvec, pair_dm, own_dm, grads[c],
                False, no_dvec, no_dm, no_dm,
            )  # fmt: skip
    forces, virial, dedm = scatter(0, n, offsets, nbr, vec, pair_dvec, pair_dm, own_dm)
    grad = np.zeros(n_params if need_grad else 0)
    for c in range(n_chunks):
        grad += grads[c]
    return site_e, forces, virial, dedm, grad, grads


# ---------------------------------------------------------------- the fitting loss, batched over configurations


@nb.njit(**_JIT)
def _config_sweep(
    a0, a1, types, moments, offsets, nbr, vec, rc, sc, xi, basic, times, mapping, n_moments,
    r_min, r_cut, scaling, mag_min, mag_max, need_grad, site_e, pair_dvec, pair_dm, own_dm, g,
    tangent, dvec, dm, gt,
):  # fmt: skip
    """One configuration (atoms a0 <= i < a1) through :func:`site_block`: (energy, forces, virial, dE/dm), or
    with ``tangent`` only ``gt`` (no forces: the sweep skips dV/dvec; nothing scattered)."""
    site_block(
        a0, a1, types, moments, offsets, nbr, vec, rc, sc, xi, basic, times, mapping, n_moments,
        r_min, r_cut, scaling, mag_min, mag_max, need_grad, not tangent, site_e, pair_dvec, pair_dm, own_dm, g,
        tangent, dvec, dm, gt,
    )  # fmt: skip
    if tangent:
        return 0.0, np.zeros((0, 3)), np.zeros(6), np.zeros(0)
    forces, virial, dedm = scatter(a0, a1, offsets, nbr, vec, pair_dvec, pair_dm, own_dm)
    return site_e[a0:a1].sum(), forces, virial, dedm


@nb.njit(parallel=True, **_JIT)
def loss_batch(
    n_chunks, atom_start, types, moments, offsets, nbr, vec,
    rc, sc, xi, basic, times, mapping, n_moments, r_min, r_cut, scaling, mag_min, mag_max,
    symmetric, need_grad, n_params,
    e_ref, has, f_ref, w_ref, t_ref, weights,
):  # fmt: skip
    """The fitting loss of ``loss.py`` over K configurations (atoms ``atom_start[k]:atom_start[k + 1]``), in
    ``n_chunks`` parallel chunks of configurations: per configuration the energy, forces, virial and dE/dm (the mean
    over M and -M with ``symmetric``), the four loss terms, and with ``need_grad`` their exact parameter gradient
    (the energy term from dE/dtheta, the others from one tangent sweep along the weighted residuals).

    Returns ``(terms (K, 4), grad (n_params,), energies (K,) eV, forces (N, 3) eV/A, virials (K, 6) eV,
    magnetic forces (N,) eV/mu_B)``; ``terms`` and ``grad`` are sums, not yet divided by K.
    """
    k_cfg = atom_start.shape[0] - 1
    n = types.shape[0]
    n_pairs = nbr.shape[0]
    terms = np.zeros((k_cfg, 4))
    e_pred = np.zeros(k_cfg)
    f_pred = np.zeros((n, 3))
    w_pred = np.zeros((k_cfg, 6))
    t_pred = np.zeros(n)
    grads = np.zeros((n_chunks, n_params if need_grad else 0))
    site_e = np.zeros(n)
    pair_dvec = np.zeros((n_pairs, 3))
    pair_dm = np.zeros(n_pairs)
    own_dm = np.zeros(n)
    dvec = np.zeros((n_pairs if need_grad else 0, 3))
    dm = np.zeros(n if need_grad else 0)
    neg = -moments
    n_runs = 2 if symmetric else 1
    chunk = (k_cfg + n_chunks - 1) // n_chunks
    we, wf, ws, wt = weights[0], weights[1], weights[2], weights[3]
    for c in nb.prange(n_chunks):
        gsum = np.zeros(n_params if need_grad else 0)
        g = np.zeros(n_params if need_grad else 0)
        gt = np.zeros(n_params if need_grad else 0)
        for k in range(c * chunk, min(k_cfg, (c + 1) * chunk)):
            a0 = atom_start[k]
            a1 = atom_start[k + 1]
            na = a1 - a0
            g[:] = 0.0
            energy = 0.0
            forces = np.zeros((na, 3))
            virial = np.zeros(6)
            dedm = np.zeros(na)
            for run in range(n_runs):
                mm = moments if run == 0 else neg
                e1, f1, v1, d1 = _config_sweep(
                    a0, a1, types, mm, offsets, nbr, vec, rc, sc, xi, basic, times, mapping, n_moments,
                    r_min, r_cut, scaling, mag_min, mag_max, need_grad, site_e, pair_dvec, pair_dm, own_dm, g,
                    False, dvec, dm, gt,
                )  # fmt: skip
                sign = 1.0 if run == 0 else -1.0
                energy += e1 / n_runs
                forces += f1 / n_runs
                virial += v1 / n_runs
                dedm += sign * d1 / n_runs
            if need_grad:
                g /= n_runs
            # residuals and loss terms
            de = energy - e_ref[k] if has[k, 0] else 0.0
            e_pred[k] = energy
            w_pred[k] = virial
            terms[k, 0] = we * de * de
            dw = np.zeros((3, 3))
            if has[k, 2]:
                for v in range(6):
                    a = (0, 1, 2, 1, 0, 0)[v]
                    b = (0, 1, 2, 2, 2, 1)[v]
                    dw[a, b] = virial[v] - w_ref[k, v]
                    dw[b, a] = dw[a, b]
                terms[k, 2] = ws * np.sum(dw * dw)
            for i in range(na):
                f_pred[a0 + i] = forces[i]
                t_pred[a0 + i] = -dedm[i]
                if has[k, 1]:
                    for x in range(3):
                        d = forces[i, x] - f_ref[a0 + i, x]
                        terms[k, 1] += wf * d * d
                if has[k, 3]:
                    d = -dedm[i] - t_ref[a0 + i]
                    terms[k, 3] += wt * d * d
            if not need_grad:
                continue
            for x in range(n_params):
                gsum[x] += 2.0 * we * de * g[x]
            if not (has[k, 1] or has[k, 2] or has[k, 3]):
                continue
            # tangent: positions + t w_f dF, strain t w_s dW, moments + t w_t dT
            for i in range(a0, a1):
                dm[i] = wt * (-dedm[i - a0] - t_ref[i]) if has[k, 3] else 0.0
                for p in range(offsets[i], offsets[i + 1]):
                    j = nbr[p]
                    for x in range(3):
                        d = 0.0
                        if has[k, 1]:
                            d += wf * ((forces[j - a0, x] - f_ref[j, x]) - (forces[i - a0, x] - f_ref[i, x]))
                        if has[k, 2]:
                            d += ws * (dw[x, 0] * vec[p, 0] + dw[x, 1] * vec[p, 1] + dw[x, 2] * vec[p, 2])
                        dvec[p, x] = d
            gt[:] = 0.0
            for run in range(n_runs):
                if run == 1:
                    for i in range(a0, a1):
                        dm[i] = -dm[i]
                mm = moments if run == 0 else neg
                _config_sweep(
                    a0, a1, types, mm, offsets, nbr, vec, rc, sc, xi, basic, times, mapping, n_moments,
                    r_min, r_cut, scaling, mag_min, mag_max, True, site_e, pair_dvec, pair_dm, own_dm, g,
                    True, dvec, dm, gt,
                )  # fmt: skip
            for x in range(n_params):
                gsum[x] -= 2.0 * gt[x] / n_runs
        grads[c] = gsum
    grad = np.zeros(n_params if need_grad else 0)
    for c in range(n_chunks):
        grad += grads[c]
    return terms, grad, e_pred, f_pred, w_pred, t_pred
