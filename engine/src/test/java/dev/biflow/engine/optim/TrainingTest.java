// End to end: a small MLP learns with AdamW; and a run resumed from saved state equals an uninterrupted one bit for bit.
package dev.biflow.engine.optim;

import dev.biflow.engine.Fused;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.nn.Activation;
import dev.biflow.engine.nn.Linear;
import dev.biflow.engine.nn.MLP;
import dev.biflow.engine.nn.Sequential;
import org.junit.jupiter.api.Test;

import java.util.LinkedHashMap;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.*;

class TrainingTest {
    static final Tensor XOR_X = Tensor.of(new float[][]{{0, 0}, {0, 1}, {1, 0}, {1, 1}});
    static final Tensor XOR_Y = Tensor.of(new float[][]{{0}, {1}, {1}, {0}});

    @Test
    void twoLayerMlpLearnsXor() {
        Rng rng = new Rng(1);
        Sequential net = new Sequential(new Linear(2, 16, true, rng), Activation.tanh(), new Linear(16, 1, true, rng));
        AdamW opt = new AdamW(net.parameters(), 0.03, 0.9, 0.95, 1e-8, 1e-4);
        float first = Float.NaN, loss = Float.NaN;
        for (int step = 0; step < 400; step++) {
            opt.zeroGrad();
            Tensor l = Fused.mse(net.forward(XOR_X), XOR_Y);
            l.backward();
            opt.step();
            loss = l.item();
            if (step == 0) first = loss;
        }
        assertTrue(first > 0.1, "starts unsolved: " + first);
        assertTrue(loss < 1e-3, "XOR MSE after 400 AdamW steps should be below 1e-3, got " + loss);
        Tensor out = net.forward(XOR_X);
        for (int i = 0; i < 4; i++) assertEquals(XOR_Y.get(i, 0), out.get(i, 0), 0.1);
    }

    /** A training run on a small regression; at step {@code cut} everything is saved and resumed into fresh objects. */
    static float[][] run(int steps, int cut, boolean restoreOptimizer) {
        Rng data = new Rng(77);
        Tensor x = Tensor.randn(data, 32, 4), y = Tensor.randn(data, 32, 4);
        MLP net = new MLP(4, 2, true, new Rng(5));
        LrSchedule sched = LrSchedule.warmupCosine(1e-4, 1e-2, 1e-5, 5, steps);
        AdamW opt = new AdamW(net.parameters(), sched.at(0), 0.9, 0.95, 1e-8, 1e-4);
        Ema ema = new Ema(net.parameters(), 0.9, true);
        for (int step = 0; step < steps; step++) {
            if (step == cut) {
                // save deep copies, then continue in brand-new objects built with another seed
                Map<String, Tensor> model = copy(net.stateDict()), optState = copy(opt.state()), emaState = copy(ema.state());
                net = new MLP(4, 2, true, new Rng(999));
                net.loadStateDict(model, true);
                opt = new AdamW(net.parameters(), 0.5, 0.9, 0.95, 1e-8, 1e-4);
                if (restoreOptimizer) opt.loadState(optState);
                ema = new Ema(net.parameters(), 0.9, true);
                ema.loadState(emaState);
            }
            opt.setLr(sched.at(opt.stepCount()));
            opt.zeroGrad();
            Fused.mse(net.forward(x), y).backward();
            GradClip.clipGlobalNorm(net.parameters(), 0.5);
            opt.step();
            ema.update();
        }
        int n = net.parameters().size();
        float[][] out = new float[2 * n][];
        for (int i = 0; i < n; i++) {
            out[i] = net.parameters().get(i).toArray();
            out[n + i] = ema.shadow(i).data();
        }
        return out;
    }

    static Map<String, Tensor> copy(Map<String, Tensor> m) {
        Map<String, Tensor> c = new LinkedHashMap<>();
        m.forEach((k, v) -> c.put(k, v.copy()));
        return c;
    }

    @Test
    void resumeFromSavedStateIsBitIdentical() {
        float[][] straight = run(30, -1, true), resumed = run(30, 13, true);
        assertEquals(straight.length, resumed.length);
        for (int i = 0; i < straight.length; i++) assertArrayEquals(straight[i], resumed[i], "tensor " + i);
        // the check has teeth: resuming the model without the optimizer's moments ends elsewhere
        assertFalse(java.util.Arrays.equals(straight[0], run(30, 13, false)[0]));
    }

    @Test
    void loadStateRejectsMismatchedState() {
        Tensor a = Tensor.zeros(2, 3);
        AdamW opt = new AdamW(java.util.List.of(a), 0.1);
        OptimTestUtil.setGrad(a, new float[6]);
        opt.step();
        Map<String, Tensor> st = copy(opt.state());
        AdamW other = new AdamW(java.util.List.of(Tensor.zeros(3, 2)), 0.1);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> other.loadState(st));
        assertTrue(e.getMessage().contains("exp_avg.0") && e.getMessage().contains("(2, 3)"), e.getMessage());
        st.remove("step");
        assertThrows(IllegalArgumentException.class, () -> new AdamW(java.util.List.of(Tensor.zeros(2, 3)), 0.1).loadState(st));
        Map<String, Tensor> extra = copy(opt.state());
        extra.put("exp_avg.5", Tensor.zeros(1));
        assertThrows(IllegalArgumentException.class, () -> new AdamW(java.util.List.of(Tensor.zeros(2, 3)), 0.1).loadState(extra));
    }
}
