"""Numba kernels of the mMTP: site energies and their derivatives by one reverse sweep.

For every atom i the forward pass builds the radial functions
f_mu(r, m_i, m_j) of each neighbour, the basic moments
sum_j f_mu u_x^a u_y^b u_z^c and the products of ``times``; the reverse pass
carries dV_i/d(moment) back to every neighbour pair. One sweep gives the site
energy, dV_i/d(r_ij) for every pair (forces and virial), dV_i/dm for the
central atom and each neighbour (magnetic forces), and dV_i/dtheta.

Per pair, the angular monomials u_x^a u_y^b u_z^c (and their derivatives along
u) are formed once and shared by the basic moments of the same rank
(:func:`monomial_tables`); sums over the basic moments of one radial function
run in registers (:func:`mu_segments`).

Pair arrays are written per pair and scattered serially afterwards, so the
atom loop is free of races and runs in parallel (``prange`` over chunks).
"""

from __future__ import annotations

import numba as nb
import numpy as np

_JIT = {'cache': True, 'nogil': True, 'error_model': 'numpy'}


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
    """The angular monomials u_x^a u_y^b u_z^c of degree a + b + c <= the largest of ``basic`` (K of them).

    Returns ``powers`` (K, 3) (a, b, c of each), ``of_basic`` (n_basic,) (the monomial of each basic moment,
    ``basic[q, 1:]``), and for the derivative along u_x, u_y, u_z: ``lower`` (K, 3), the monomial of one power less
    along that axis (0 where the power is 0), and ``power`` (K, 3), the power (float; 0 gives no term). Basic
    moments that share a monomial (the same tensor rank, other radial functions mu) then share its value and its
    derivative: the sweep works per monomial, not per basic moment.
    """
    n_basic = basic.shape[0]
    max_pow = 0
    for q in range(n_basic):
        max_pow = max(max_pow, basic[q, 1] + basic[q, 2] + basic[q, 3])
    lookup = np.full((max_pow + 1, max_pow + 1, max_pow + 1), -1, dtype=np.int64)
    n_mono = 0
    for a in range(max_pow + 1):
        for b in range(max_pow + 1 - a):
            for c in range(max_pow + 1 - a - b):
                lookup[a, b, c] = n_mono
                n_mono += 1
    powers = np.zeros((n_mono, 3), dtype=np.int64)
    lower = np.zeros((n_mono, 3), dtype=np.int64)
    power = np.zeros((n_mono, 3))
    for a in range(max_pow + 1):
        for b in range(max_pow + 1 - a):
            for c in range(max_pow + 1 - a - b):
                k = lookup[a, b, c]
                powers[k, 0] = a
                powers[k, 1] = b
                powers[k, 2] = c
                if a > 0:
                    lower[k, 0] = lookup[a - 1, b, c]
                    power[k, 0] = a
                if b > 0:
                    lower[k, 1] = lookup[a, b - 1, c]
                    power[k, 1] = b
                if c > 0:
                    lower[k, 2] = lookup[a, b, c - 1]
                    power[k, 2] = c
    of_basic = np.zeros(n_basic, dtype=np.int64)
    for q in range(n_basic):
        of_basic[q] = lookup[basic[q, 1], basic[q, 2], basic[q, 3]]
    return powers, of_basic, lower, power


@nb.njit(**_JIT)
def mu_segments(basic, n_mu):
    """The basic moments grouped by radial function: ``by_mu`` (n_basic,) lists them in order of mu, and those of
    mu are ``by_mu[start[mu]:start[mu + 1]]``. The sweep sums each group into registers: summing into dV/df_mu in
    memory, one basic moment after another of the same mu, made every step wait for the one before."""
    n_basic = basic.shape[0]
    by_mu = np.argsort(basic[:, 0], kind='mergesort')
    start = np.zeros(n_mu + 1, dtype=np.int64)
    for q in range(n_basic):
        start[basic[q, 0] + 1] += 1
    for mu in range(n_mu):
        start[mu + 1] += start[mu]
    return by_mu, start


@nb.njit(inline='always', **_JIT)
def _monomials(ux, uy, uz, powers, px, py, pz, mono):
    """Powers px[k] = u_x^k (likewise py, pz) and every monomial ``mono[k]`` of ``powers`` at the unit vector u."""
    px[0] = 1.0
    py[0] = 1.0
    pz[0] = 1.0
    for k in range(1, px.shape[0]):
        px[k] = px[k - 1] * ux
        py[k] = py[k - 1] * uy
        pz[k] = pz[k - 1] * uz
    for k in range(powers.shape[0]):
        mono[k] = px[powers[k, 0]] * py[powers[k, 1]] * pz[powers[k, 2]]


@nb.njit(inline='always', **_JIT)
def _monomial_gradients(mono, lower, power, dmono):
    """``dmono[k, d]`` = d(monomial k)/du_d = power * (the monomial of one power less along d)."""
    for k in range(mono.shape[0]):
        for d in range(3):
            dmono[k, d] = power[k, d] * mono[lower[k, d]]


@nb.njit(inline='always', **_JIT)
def _monomial_tangents(dmono, d0, d1, d2, tmono):
    """``tmono[k]``: the change of monomial k along the change (d0, d1, d2) of the unit vector u."""
    for k in range(dmono.shape[0]):
        tmono[k] = dmono[k, 0] * d0 + dmono[k, 1] * d1 + dmono[k, 2] * d2


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
    (without: the sweep skips every derivative along r, what moment equilibration at fixed atoms does not use);
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
    powers, of_basic, lower, power = monomial_tables(basic)
    by_mu, mu_start = mu_segments(basic, n_mu)
    mono_by_mu = of_basic[by_mu]
    n_mono = powers.shape[0]
    max_pow = powers[n_mono - 1, 0]  # the last monomial is u_x^max_pow
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
    cc = np.zeros((n_species, n_mu, n_phi, n_psi))
    dcc = np.zeros((n_species, n_mu, n_phi, n_psi))
    acc = np.zeros((n_species, n_mu, n_phi, n_psi))
    px = np.zeros(max_pow + 1)
    py = np.zeros(max_pow + 1)
    pz = np.zeros(max_pow + 1)
    mono = np.zeros(n_mono)
    dmono = np.zeros((n_mono, 3))
    tmono = np.zeros(n_mono if tangent else 0)
    dvdf = np.zeros(n_mu)
    nt = max_nb if tangent else 0
    dmom = np.zeros(n_moments if tangent else 0)
    dadj = np.zeros(n_moments if tangent else 0)
    df = np.zeros((nt, n_mu))
    qder = np.zeros((nt, n_phi))
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
                        cc[zj, mu, b, jj] = s0
                        dcc[zj, mu, b, jj] = s1
        for k in range(n_moments):
            mom[k] = 0.0
        if tangent:
            for ii in range(n_psi):
                tpsi_i[ii] = dpsi_i[ii] * dm[i]
            for k in range(n_moments):
                dmom[k] = 0.0
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
            for mu in range(n_mu):
                f = 0.0
                fr = 0.0
                fmj = 0.0
                fmi = 0.0
                for b in range(n_phi):
                    qv = tb[b] * wq
                    qd = dtb[b] * (2.0 / span) * wq + tb[b] * dwq if along_r else 0.0
                    if mu == 0:
                        qval[lp, b] = qv
                        if tangent:
                            qder[lp, b] = qd
                    for jj in range(n_psi):
                        c = cc[zj, mu, b, jj]
                        f += c * qv * psij[lp, jj]
                        fr += c * qd * psij[lp, jj]
                        fmj += c * qv * dpsi_j[jj]
                        fmi += dcc[zj, mu, b, jj] * qv * psij[lp, jj]
                fval[lp, mu] = f
                fdr[lp, mu] = fr
                fdmj[lp, mu] = fmj
                fdmi[lp, mu] = fmi
            ux = x * inv_r
            uy = y * inv_r
            uz = z * inv_r
            _monomials(ux, uy, uz, powers, px, py, pz, mono)
            for mu in range(n_mu):
                f = fval[lp, mu]
                for s in range(mu_start[mu], mu_start[mu + 1]):
                    mom[by_mu[s]] += f * mono[mono_by_mu[s]]
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
                _monomial_gradients(mono, lower, power, dmono)
                _monomial_tangents(dmono, du[lp, 0], du[lp, 1], du[lp, 2], tmono)
                for mu in range(n_mu):
                    f = fval[lp, mu]
                    dfm = df[lp, mu]
                    for s in range(mu_start[mu], mu_start[mu + 1]):
                        k = mono_by_mu[s]
                        dmom[by_mu[s]] += dfm * mono[k] + f * tmono[k]
        for t in range(n_times):
            mom[times[t, 3]] += times[t, 2] * mom[times[t, 0]] * mom[times[t, 1]]
        if tangent:
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
        dmi = 0.0
        for p in range(p0, p1):
            lp = p - p0
            zj = types[nbr[p]]
            x = vec[p, 0]
            y = vec[p, 1]
            z = vec[p, 2]
            r = np.sqrt(x * x + y * y + z * z)
            inv_r = 1.0 / r
            ux = x * inv_r
            uy = y * inv_r
            uz = z * inv_r
            _monomials(ux, uy, uz, powers, px, py, pz, mono)
            # dV/df_mu = sum of adj * monomial over the basic moments of mu; dV/du = sum of adj * f_mu * dmonomial/du
            gx = 0.0
            gy = 0.0
            gz = 0.0
            if need_forces or tangent:
                _monomial_gradients(mono, lower, power, dmono)
            for mu in range(n_mu):
                dv = 0.0
                sx = 0.0
                sy = 0.0
                sz = 0.0
                for s in range(mu_start[mu], mu_start[mu + 1]):
                    aq = adj[by_mu[s]]
                    k = mono_by_mu[s]
                    dv += aq * mono[k]
                    if need_forces:
                        sx += aq * dmono[k, 0]
                        sy += aq * dmono[k, 1]
                        sz += aq * dmono[k, 2]
                dvdf[mu] = dv
                f = fval[lp, mu]
                gx += f * sx
                gy += f * sy
                gz += f * sz
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
                _monomial_tangents(dmono, du[lp, 0], du[lp, 1], du[lp, 2], tmono)
                for mu in range(n_mu):
                    t = 0.0
                    for s in range(mu_start[mu], mu_start[mu + 1]):
                        q = by_mu[s]
                        k = mono_by_mu[s]
                        t += dadj[q] * mono[k] + adj[q] * tmono[k]
                    ddvdf[mu] = t
                for mu in range(n_mu):
                    for b in range(n_phi):
                        for jj in range(n_psi):
                            dacc[zj, mu, b, jj] += (
                                ddvdf[mu] * qval[lp, b] * psij[lp, jj]
                                + dvdf[mu] * qder[lp, b] * psij[lp, jj]
                                + dvdf[mu] * qval[lp, b] * dpsij[lp, jj]
                            )
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
