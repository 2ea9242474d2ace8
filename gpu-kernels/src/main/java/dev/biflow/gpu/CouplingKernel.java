// Affine coupling forward / inverse and its per-sample log-det reduction, as one Aparapi kernel.
package dev.biflow.gpu;

import com.aparapi.Kernel;

/**
 * mode FORWARD: out = (in - b) * exp(-a); INVERSE: out = in * exp(a) + b (one item per element).
 * mode LOGDET: logdet[s] = sign * sum of a over sample s (one item per sample, summed in order,
 * so the result does not depend on the device's scheduling). Sharing one kernel keeps a on the
 * device between the elementwise pass and the reduction: it is uploaded once.
 */
final class CouplingKernel extends Kernel {
    static final int FORWARD = 0, INVERSE = 1, LOGDET = 2;

    float[] in = new float[1], a = new float[1], b = new float[1], out = new float[1], logdet = new float[1];
    int mode, n, batch, perSample;
    float sign;

    // Flat ifs, not an if/else chain: Aparapi's decompiler rejects some nested shapes ("child list broken").
    @Override
    public void run() {
        int g = getGlobalId(0);
        if (mode == LOGDET && g < batch) {
            float s = 0f;
            int lo = g * perSample;
            int hi = lo + perSample;
            for (int i = lo; i < hi; i++) s += a[i];
            logdet[g] = sign * s;
        }
        if (mode == FORWARD && g < n) out[g] = (in[g] - b[g]) * exp(-a[g]);
        if (mode == INVERSE && g < n) out[g] = in[g] * exp(a[g]) + b[g];
    }
}
