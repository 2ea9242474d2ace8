// The engine's seeded random number generator: reproducible streams whose state can be checkpointed.
package dev.biflow.engine;

/**
 * A seeded generator (SplitMix64 state update, 64-bit state) for weights, noise and data order.
 * Its whole state is one long, so a checkpoint stores it and a resumed run continues the same
 * stream. Normal samples use Box-Muller in double precision, exactly two longs per pair of normals,
 * so a stream can be entered at any position ({@link #skipNormals}): a cluster draws images
 * [i, j) of a seed's noise without drawing the ones before (the same values, bit for bit).
 */
public final class Rng {
    private long state;
    private double spareNormal;
    private boolean hasSpare;

    public Rng(long seed) { this.state = seed; }

    /** The state to store in a checkpoint; {@link #setState} restores it. */
    public long[] state() { return new long[]{state, hasSpare ? 1 : 0, Double.doubleToRawLongBits(spareNormal)}; }

    public void setState(long[] s) {
        if (s.length != 3) throw new IllegalArgumentException("Rng state must have 3 longs, got " + s.length);
        state = s[0];
        hasSpare = s[1] != 0;
        spareNormal = Double.longBitsToDouble(s[2]);
    }

    public long nextLong() {
        long z = (state += 0x9E3779B97F4A7C15L);
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }

    /** Uniform in [0, 1) with 53 random bits. */
    public double nextDouble() { return (nextLong() >>> 11) * 0x1.0p-53; }

    public float nextFloat() { return (nextLong() >>> 40) * 0x1.0p-24f; }

    /** Uniform integer in [0, bound). */
    public int nextInt(int bound) {
        if (bound <= 0) throw new IllegalArgumentException("bound must be positive, got " + bound);
        return (int) Math.floorMod(nextLong() >>> 1, (long) bound);
    }

    public double nextGaussian() {
        if (hasSpare) {
            hasSpare = false;
            return spareNormal;
        }
        // u1 = 0 (probability 2^-53 per pair) becomes 2^-54 instead of a redraw: every pair then takes exactly
        // two longs, which is what makes skipNormals exact; any other draw is what the redraw loop gave
        double u1 = nextDouble();
        if (u1 == 0) u1 = 0x1.0p-54;
        double u2 = nextDouble();
        double r = Math.sqrt(-2 * Math.log(u1));
        spareNormal = r * Math.sin(2 * Math.PI * u2);
        hasSpare = true;
        return r * Math.cos(2 * Math.PI * u2);
    }

    /**
     * Moves on as if {@link #nextGaussian} had been called k times (k >= 0): a pending spare first,
     * then whole pairs (two longs each: the state just advances), then one draw for an odd rest.
     */
    public void skipNormals(long k) {
        if (k < 0) throw new IllegalArgumentException("cannot skip a negative number of normals: " + k);
        if (k == 0) return;
        if (hasSpare) {
            hasSpare = false;
            k--;
        }
        state += (k / 2) * 2 * 0x9E3779B97F4A7C15L; // SplitMix64's state moves by the golden gamma per long (mod 2^64)
        if (k % 2 == 1) nextGaussian();
    }

    public void fillNormal(float[] d) { for (int i = 0; i < d.length; i++) d[i] = (float) nextGaussian(); }

    public void fillUniform(float[] d) { for (int i = 0; i < d.length; i++) d[i] = nextFloat(); }

    /** A random permutation of 0..n-1 (Fisher-Yates). */
    public int[] permutation(int n) {
        int[] p = new int[n];
        for (int i = 0; i < n; i++) p[i] = i;
        for (int i = n - 1; i > 0; i--) {
            int j = nextInt(i + 1);
            int t = p[i]; p[i] = p[j]; p[j] = t;
        }
        return p;
    }

    /** An independent generator derived from this one (for per-worker streams). */
    public Rng split() { return new Rng(nextLong()); }
}
