// A chain of single-input modules applied in order (torch.nn.Sequential): children named "0", "1", ...
package dev.biflow.engine.nn;

import dev.biflow.engine.Tensor;

/**
 * forward(x) = m_{n-1}(... m_1(m_0(x))). Children are named by position, so parameter-free
 * layers (activations) still take an index, exactly as in PyTorch: in ml-tarflow's MLP the two
 * Linear layers are {@code main.0} and {@code main.2}.
 */
public class Sequential extends ModuleList<Module> {
    public Sequential(Module... modules) { for (Module m : modules) add(m); }

    @Override
    public Tensor forward(Tensor x) {
        for (Module m : this) x = m.forward(x);
        return x;
    }
}
