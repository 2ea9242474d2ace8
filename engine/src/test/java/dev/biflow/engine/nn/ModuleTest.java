// Module bookkeeping: dotted state-dict names, order, loading with its errors, modes, freezing.
package dev.biflow.engine.nn;

import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.*;

class ModuleTest {
    /** ml-tarflow's AttentionBlock: attention (with norm) and mlp (with norm). */
    static final class Block extends Module {
        final MultiHeadAttention attention;
        final MLP mlp;

        Block(int d, Rng rng) {
            attention = registerModule("attention", new MultiHeadAttention(d, 2, true, true, rng));
            mlp = registerModule("mlp", new MLP(d, 4, true, rng));
        }

        @Override
        public Tensor forward(Tensor x) {
            x = x.add(attention.forward(x));
            return x.add(mlp.forward(x));
        }
    }

    /** A TARFlow-like block: parameters and a buffer of its own before its children. */
    static final class Net extends Module {
        final Linear projIn;
        final Tensor posEmbed;
        final ModuleList<Block> blocks = new ModuleList<>();

        Net(int d, int layers, Rng rng) {
            projIn = registerModule("proj_in", new Linear(4, d, true, rng));
            posEmbed = registerParameter("pos_embed", Init.normal(Tensor.zeros(3, d), rng, 0, 1e-2));
            registerBuffer("var", Tensor.ones(3, 4));
            registerBuffer("attn_mask", Tensor.ones(3, 3), false);
            registerModule("blocks", blocks);
            for (int i = 0; i < layers; i++) blocks.add(new Block(d, rng));
        }
    }

    @Test
    void nestedNamesFollowPyTorch() {
        Net net = new Net(8, 2, new Rng(1));
        List<String> keys = new ArrayList<>(net.stateDict().keySet());
        List<String> block0 = List.of(
                "blocks.0.attention.norm.weight", "blocks.0.attention.norm.bias",
                "blocks.0.attention.qkv.weight", "blocks.0.attention.qkv.bias",
                "blocks.0.attention.proj.weight", "blocks.0.attention.proj.bias",
                "blocks.0.mlp.norm.weight", "blocks.0.mlp.norm.bias",
                "blocks.0.mlp.main.0.weight", "blocks.0.mlp.main.0.bias",
                "blocks.0.mlp.main.2.weight", "blocks.0.mlp.main.2.bias");
        List<String> expected = new ArrayList<>(List.of("pos_embed", "var", "proj_in.weight", "proj_in.bias"));
        expected.addAll(block0);
        for (String k : block0) expected.add(k.replace("blocks.0.", "blocks.1."));
        assertEquals(expected, keys);
        assertFalse(net.stateDict().containsKey("attn_mask"), "non-persistent buffers stay out of the state dict");
        assertTrue(net.namedBuffers().containsKey("attn_mask"));
        assertFalse(net.namedParameters().containsKey("var"), "buffers are not parameters");
        assertEquals(4 + 2 * 12, keys.size());
    }

    @Test
    void parametersAreGradLeavesAndCounted() {
        Net net = new Net(8, 1, new Rng(1));
        for (var e : net.namedParameters().entrySet()) {
            assertTrue(e.getValue().isLeaf(), e.getKey());
            assertTrue(e.getValue().needsGrad(), e.getKey());
        }
        assertFalse(net.namedBuffers().get("var").needsGrad());
        long expected = 4 * 8 + 8 + 3 * 8                       // proj_in, pos_embed
                + 2 * 8 + (8 * 24 + 24) + (8 * 8 + 8)            // attention: norm, qkv, proj
                + 2 * 8 + (8 * 32 + 32) + (32 * 8 + 8);          // mlp: norm, main.0, main.2
        assertEquals(expected, net.parameterCount());
        assertEquals(net.namedParameters().size(), net.parameters().size());
    }

    @Test
    void namesOfModulesAndSequentialIndices() {
        MLP mlp = new MLP(4, 2, false, new Rng(3));
        assertEquals(List.of("", "main", "main.0", "main.1", "main.2"), new ArrayList<>(mlp.namedModules().keySet()));
        assertInstanceOf(Activation.class, mlp.main.get(1));
        assertEquals(List.of("main.0.weight", "main.0.bias", "main.2.weight", "main.2.bias"), new ArrayList<>(mlp.stateDict().keySet()));
    }

    @Test
    void roundTripCopiesInPlace() {
        Net a = new Net(8, 2, new Rng(1)), b = new Net(8, 2, new Rng(2));
        Map<String, Tensor> bTensors = b.stateDict();
        Map<String, Tensor> saved = new LinkedHashMap<>();
        a.stateDict().forEach((k, v) -> saved.put(k, v.copy()));
        Module.LoadResult r = b.loadStateDict(saved, true);
        assertTrue(r.missingKeys().isEmpty() && r.unexpectedKeys().isEmpty());
        for (var e : a.stateDict().entrySet()) {
            assertArrayEquals(e.getValue().data(), b.stateDict().get(e.getKey()).data(), e.getKey());
            assertSame(bTensors.get(e.getKey()), b.stateDict().get(e.getKey()), "tensors keep their identity");
        }
    }

    @Test
    void missingAndUnexpectedKeysAreNamed() {
        Net a = new Net(8, 1, new Rng(1));
        Map<String, Tensor> sd = new LinkedHashMap<>();
        a.stateDict().forEach((k, v) -> sd.put(k, v.copy()));
        sd.remove("blocks.0.mlp.main.2.bias");
        sd.put("blocks.0.extra.weight", Tensor.zeros(2));
        float before = a.stateDict().get("proj_in.weight").data()[0];
        sd.get("proj_in.weight").data()[0] = before + 1;
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> a.loadStateDict(sd, true));
        assertTrue(e.getMessage().contains("missing keys") && e.getMessage().contains("blocks.0.mlp.main.2.bias"), e.getMessage());
        assertTrue(e.getMessage().contains("unexpected keys") && e.getMessage().contains("blocks.0.extra.weight"), e.getMessage());
        assertEquals(before, a.stateDict().get("proj_in.weight").data()[0], "a failed load writes nothing");

        Module.LoadResult r = a.loadStateDict(sd, false);
        assertEquals(List.of("blocks.0.mlp.main.2.bias"), r.missingKeys());
        assertEquals(List.of("blocks.0.extra.weight"), r.unexpectedKeys());
        assertEquals(before + 1, a.stateDict().get("proj_in.weight").data()[0], "non-strict load copies what matches");
    }

    @Test
    void shapeMismatchNamesKeyAndBothShapes() {
        Net a = new Net(8, 1, new Rng(1));
        Map<String, Tensor> sd = new LinkedHashMap<>();
        a.stateDict().forEach((k, v) -> sd.put(k, v.copy()));
        sd.put("blocks.0.attention.qkv.weight", Tensor.zeros(24, 4));
        for (boolean strict : new boolean[]{true, false}) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> a.loadStateDict(sd, strict));
            String m = e.getMessage();
            assertTrue(m.contains("blocks.0.attention.qkv.weight") && m.contains("(24, 8)") && m.contains("(24, 4)"), m);
        }
    }

    @Test
    void trainEvalZeroGradAndFreeze() {
        Net net = new Net(8, 1, new Rng(1));
        assertTrue(net.isTraining());
        net.eval();
        for (Module m : net.namedModules().values()) assertFalse(m.isTraining());
        net.train();
        assertTrue(net.blocks.get(0).mlp.isTraining());

        Tensor x = Tensor.randn(new Rng(5), 2, 3, 8);
        net.blocks.get(0).forward(x).sum().backward();
        assertNotNull(net.blocks.get(0).attention.qkv.weight.gradData());
        net.zeroGrad();
        for (Tensor p : net.parameters()) assertNull(p.gradData());

        net.requiresGrad(false);
        for (Tensor p : net.parameters()) assertFalse(p.needsGrad());
        assertFalse(net.blocks.get(0).forward(x).needsGrad(), "a frozen model records no graph");
    }

    @Test
    void badNamesAndDuplicatesAreRejected() {
        class Bad extends Module {
            Bad(String n1, String n2) {
                registerParameter(n1, Tensor.zeros(1));
                registerParameter(n2, Tensor.zeros(1));
            }
        }
        assertThrows(IllegalArgumentException.class, () -> new Bad("w", "w"));
        assertThrows(IllegalArgumentException.class, () -> new Bad("a.b", "c"));
        UnsupportedOperationException u = assertThrows(UnsupportedOperationException.class,
                () -> new ModuleList<>().forward(Tensor.zeros(1)));
        assertTrue(u.getMessage().contains("ModuleList"));
    }

    @Test
    void toStringShowsTree() {
        String s = new MLP(4, 2, true, new Rng(1)).toString();
        assertTrue(s.contains("(norm): LayerNorm(4") && s.contains("(0): Linear(in=4, out=8") && s.contains("(1): Activation(GELU)"), s);
    }
}
