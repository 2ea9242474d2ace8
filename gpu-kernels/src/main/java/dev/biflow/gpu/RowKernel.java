// Row-wise kernels (LayerNorm forward, softmax) in one Aparapi kernel, one work item per row.
package dev.biflow.gpu;

import com.aparapi.Kernel;

/**
 * mode LAYERNORM: y = (x - mean) * rstd * w + b with the two-pass biased variance (as the CPU
 * kernel), saving mean and rstd; mode SOFTMAX: y = exp(x - max) / sum. One work item per row:
 * rows are many (B*T tokens, B*H*T attention rows) and short (D <= a few thousand), so the
 * parallelism is across rows and every row is summed in a fixed order.
 */
final class RowKernel extends Kernel {
    static final int LAYERNORM = 0, SOFTMAX = 1;

    float[] x = new float[1], y = new float[1], w = new float[1], bias = new float[1];
    float[] mean = new float[1], rstd = new float[1];
    int mode, rows, d, hasW, hasB;
    float eps;

    @Override
    public void run() {
        int r = getGlobalId(0);
        if (r < rows) {
            int off = r * d;
            if (mode == LAYERNORM) layerNormRow(r, off);
            else softmaxRow(off);
        }
    }

    private void layerNormRow(int r, int off) {
        float s = 0f;
        for (int i = 0; i < d; i++) s += x[off + i];
        float mu = s / d;
        float ss = 0f;
        for (int i = 0; i < d; i++) {
            float t = x[off + i] - mu;
            ss += t * t;
        }
        float rs = 1f / sqrt(ss / d + eps);
        mean[r] = mu;
        rstd[r] = rs;
        for (int i = 0; i < d; i++) {
            float t = (x[off + i] - mu) * rs;
            if (hasW == 1) t = t * w[i];
            if (hasB == 1) t = t + bias[i];
            y[off + i] = t;
        }
    }

    private void softmaxRow(int off) {
        float mx = x[off];
        for (int i = 1; i < d; i++) mx = max(mx, x[off + i]);
        float s = 0f;
        for (int i = 0; i < d; i++) {
            float e = exp(x[off + i] - mx);
            y[off + i] = e;
            s += e;
        }
        float inv = 1f / s;
        for (int i = 0; i < d; i++) y[off + i] = y[off + i] * inv;
    }
}
