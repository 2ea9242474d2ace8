// SGD with momentum, dampening, Nesterov and weight decay against torch.optim.SGD's formula in double.
package dev.biflow.engine.optim;

import dev.biflow.engine.Tensor;
import org.junit.jupiter.api.Test;

import java.util.List;

import static dev.biflow.engine.optim.OptimTestUtil.f;
import static dev.biflow.engine.optim.OptimTestUtil.setGrad;
import static org.junit.jupiter.api.Assertions.*;

class SGDTest {
    static double[] reference(double[] p0, double[][] grads, double lr, double mom, double damp, double wd, boolean nesterov) {
        double[] p = p0.clone(), buf = null;
        for (double[] g : grads) {
            double[] d = new double[p.length];
            for (int i = 0; i < p.length; i++) d[i] = g[i] + wd * p[i];
            if (mom != 0) {
                if (buf == null) buf = d.clone();
                else for (int i = 0; i < p.length; i++) buf[i] = mom * buf[i] + (1 - damp) * d[i];
                for (int i = 0; i < p.length; i++) d[i] = nesterov ? d[i] + mom * buf[i] : buf[i];
            }
            for (int i = 0; i < p.length; i++) p[i] -= lr * d[i];
        }
        return p;
    }

    @Test
    void momentumVariantsMatchReference() {
        double[][] grads = {{0.5, -1, 2}, {0.1, 0.3, -0.2}, {-0.4, 0.2, 0.9}, {1, 1, 1}, {0, -0.5, 0.25}};
        double[] p0 = {1, -1, 0.5};
        Object[][] cases = {{0.0, 0.0, 0.0, false}, {0.9, 0.0, 0.0, false}, {0.9, 0.0, 0.01, false},
                {0.8, 0.3, 0.0, false}, {0.9, 0.0, 0.05, true}};
        for (Object[] c : cases) {
            double mom = (double) c[0], damp = (double) c[1], wd = (double) c[2];
            boolean nest = (boolean) c[3];
            Tensor w = Tensor.of(p0, 3);
            SGD opt = new SGD(List.of(w), 0.1, mom, damp, wd, nest);
            for (double[] g : grads) {
                setGrad(w, f(g));
                opt.step();
            }
            double[] want = reference(p0, grads, 0.1, mom, damp, wd, nest);
            for (int i = 0; i < 3; i++) assertEquals(want[i], w.data()[i], 1e-6, java.util.Arrays.toString(c) + " [" + i + "]");
        }
    }

    @Test
    void stateRoundTripsAndNesterovNeedsMomentum() {
        Tensor w = Tensor.ones(2);
        SGD opt = new SGD(List.of(w), 0.1, 0.9, 0);
        setGrad(w, f(1, 2));
        opt.step();
        assertArrayEquals(f(1, 2), opt.state().get("momentum_buffer.0").data());
        SGD other = new SGD(List.of(Tensor.ones(2)), 0.1, 0.9, 0);
        other.loadState(opt.state());
        assertEquals(1, other.stepCount());
        assertArrayEquals(f(1, 2), other.state().get("momentum_buffer.0").data());
        assertThrows(IllegalArgumentException.class, () -> new SGD(List.of(w), 0.1, 0, 0, 0, true));
    }
}
