// 2-D convolution (torch.nn.Conv2d, square kernel, groups=1): weight (out, in, k, k), bias (out).
package dev.biflow.engine.nn;

import dev.biflow.engine.Fused;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Shape;
import dev.biflow.engine.Tensor;

/** Cross-correlation of (N, in, H, W) with a (out, in, k, k) kernel; PyTorch's default init. */
public class Conv2d extends Module {
    public final int in, out, kernel, stride, padding;
    public final Tensor weight;
    /** Null when built without bias. */
    public final Tensor bias;

    public Conv2d(int in, int out, int kernel, int stride, int padding, boolean bias, Rng rng) {
        if (in <= 0 || out <= 0 || kernel <= 0 || stride <= 0 || padding < 0)
            throw new IllegalArgumentException("Conv2d: bad sizes in=" + in + " out=" + out + " kernel=" + kernel
                    + " stride=" + stride + " padding=" + padding);
        this.in = in;
        this.out = out;
        this.kernel = kernel;
        this.stride = stride;
        this.padding = padding;
        this.weight = registerParameter("weight", Tensor.zeros(out, in, kernel, kernel));
        this.bias = bias ? registerParameter("bias", Tensor.zeros(out)) : null;
        Init.torchDefault(weight, this.bias, rng);
    }

    public Conv2d(int in, int out, int kernel, int stride, int padding) {
        this(in, out, kernel, stride, padding, true, Init.globalRng());
    }

    /** x (N, in, H, W) -> (N, out, H', W'). */
    @Override
    public Tensor forward(Tensor x) {
        if (x.dim() != 4 || x.size(1) != in)
            throw new IllegalArgumentException("Conv2d(" + in + " -> " + out + "): input must be (N, " + in + ", H, W), got "
                    + Shape.str(x.shape()));
        return Fused.conv2d(x, weight, bias, stride, padding);
    }

    @Override
    protected String extraRepr() {
        return in + ", " + out + ", kernel=" + kernel + ", stride=" + stride + ", padding=" + padding;
    }
}
