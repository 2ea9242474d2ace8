// Layer normalisation over the last axis (torch.nn.LayerNorm(d, eps, elementwise_affine)).
package dev.biflow.engine.nn;

import dev.biflow.engine.Fused;
import dev.biflow.engine.Shape;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.plan.PlanBuilder;
import dev.biflow.engine.plan.PlanOp;
import dev.biflow.engine.plan.Region;

/** Normalises the last axis to zero mean and unit variance (biased), then scales by weight and adds bias. */
public class LayerNorm extends Module {
    public final int dim;
    public final float eps;
    /** Null when not affine. */
    public final Tensor weight, bias;

    public LayerNorm(int dim, float eps, boolean affine) {
        if (dim <= 0) throw new IllegalArgumentException("LayerNorm: dim must be positive, got " + dim);
        this.dim = dim;
        this.eps = eps;
        this.weight = affine ? registerParameter("weight", Tensor.ones(dim)) : null;
        this.bias = affine ? registerParameter("bias", Tensor.zeros(dim)) : null;
    }

    /** eps 1e-5 and affine, PyTorch's defaults. */
    public LayerNorm(int dim) { this(dim, 1e-5f, true); }

    @Override
    public Tensor forward(Tensor x) {
        if (x.dim() < 1 || x.size(-1) != dim)
            throw new IllegalArgumentException("LayerNorm(" + dim + "): input " + Shape.str(x.shape()) + " must end in " + dim);
        return Fused.layerNorm(x, weight, bias, eps);
    }

    /** {@link #forward} for inference: in (N, dim) -> out (N, dim). */
    public void lower(PlanBuilder p, Region in, Region out) { p.add(new PlanOp.LayerNorm(weight, bias, eps, in, out)); }

    @Override
    protected String extraRepr() { return dim + ", eps=" + eps + ", affine=" + (weight != null); }
}
