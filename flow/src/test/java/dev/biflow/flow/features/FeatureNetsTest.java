// Feature networks: shapes of every intermediate, config JSON, checkpoints that round-trip and refuse the wrong kind.
package dev.biflow.flow.features;

import dev.biflow.engine.Grad;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.io.Safetensors;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.*;

class FeatureNetsTest {
    @TempDir
    Path dir;

    @Test
    void everyArchitectureExposesMapsPooledAndLogits() {
        for (FeatureNetConfig cfg : TinyNets.all()) {
            FeatureNet net = FeatureNets.build(cfg, new Rng(1));
            Tensor x = Tensor.rand(new Rng(2), 3, 1, 8, 8);
            FeatureNet.Features f = net.run(x);
            assertFalse(f.maps().isEmpty(), cfg.arch().id);
            for (Tensor m : f.maps()) {
                assertEquals(4, m.dim(), cfg.arch().id);
                assertEquals(3, m.size(0));
            }
            assertArrayEquals(new int[]{3, cfg.featureDim()}, f.penultimate().shape(), cfg.arch().id);
            assertArrayEquals(new int[]{3, 4}, f.logits().shape(), cfg.arch().id);
            assertArrayEquals(f.logits().data(), net.forward(x).data(), cfg.arch().id);
        }
    }

    @Test
    void convnetComparesEveryReluAndConvNeXtEveryBlock() {
        assertEquals(2, new FashionConvNet(TinyNets.convnet(), new Rng(0)).run(Tensor.zeros(1, 1, 8, 8)).maps().size());
        FeatureNet.Features f = new FashionConvNet(FeatureNetConfig.convnetDefault(), new Rng(0)).run(Tensor.zeros(1, 1, 28, 28));
        assertEquals(List.of(32, 64, 128), f.maps().stream().map(m -> m.size(1)).toList());
        assertEquals(List.of(28, 14, 7), f.maps().stream().map(m -> m.size(2)).toList());
        FeatureNet.Features g = new FashionConvNeXt(FeatureNetConfig.convnextDefault(), new Rng(0)).run(Tensor.zeros(1, 1, 28, 28));
        assertEquals(List.of(14, 7, 3), g.maps().stream().map(m -> m.size(2)).toList());
        FeatureNet.Features e = new FashionNetEval(FeatureNetConfig.evalDefault(), new Rng(0)).run(Tensor.zeros(1, 1, 28, 28));
        assertEquals(128, e.penultimate().size(1));
    }

    @Test
    void wrongInputShapeIsAClearError() {
        FeatureNet net = FeatureNets.build(TinyNets.convnet(), new Rng(1));
        var ex = assertThrows(IllegalArgumentException.class, () -> net.run(Tensor.zeros(2, 1, 28, 28)));
        assertTrue(ex.getMessage().contains("(B, 1, 8, 8)"), ex.getMessage());
    }

    @Test
    void configJsonRoundTripsAndValidates() {
        for (FeatureNetConfig c : List.of(FeatureNetConfig.convnetDefault(), FeatureNetConfig.convnextDefault(),
                FeatureNetConfig.evalDefault(), TinyNets.convnext()))
            assertEquals(c, FeatureNetConfig.fromJson(c.toJson()));
        assertEquals(FeatureNetConfig.Arch.EVAL, FeatureNetConfig.Arch.parse("fashionnet-eval"));
        assertEquals(FeatureNetConfig.Arch.CONVNEXT, FeatureNetConfig.Arch.parse("ConvNeXt"));
        assertThrows(IllegalArgumentException.class, () -> FeatureNetConfig.Arch.parse("inception"));
        assertThrows(IllegalArgumentException.class,
                () -> new FeatureNetConfig(FeatureNetConfig.Arch.EVAL, 1, 4, 10, List.of(4, 8, 8, 8), List.of(1, 1, 1, 1), 3, 16));
        assertThrows(IllegalArgumentException.class,
                () -> new FeatureNetConfig(FeatureNetConfig.Arch.CONVNET, 1, 8, 10, List.of(4, 8), List.of(1), 3, 16));
        assertThrows(IllegalArgumentException.class, () -> FeatureNetConfig.fromJson("{\"arch\":\"convnet\"}"));
    }

    @Test
    void checkpointRoundTripGivesTheSameNetworkFrozen() throws Exception {
        for (FeatureNetConfig cfg : TinyNets.all()) {
            FeatureNet net = FeatureNets.build(cfg, new Rng(3));
            Path p = dir.resolve(cfg.arch().id + ".safetensors");
            FeatureNets.save(net, p, Map.of("test_accuracy", "0.5"));
            FeatureNets.Loaded l = FeatureNets.loadWithMetadata(p);
            assertEquals(cfg, l.net().config);
            assertEquals("features", l.metadata().get("kind"));
            assertEquals(cfg.arch().id, l.metadata().get("arch"));
            assertEquals("0.5", l.metadata().get("test_accuracy"));
            Tensor x = Tensor.rand(new Rng(4), 2, 1, 8, 8);
            try (var ng = Grad.noGrad()) {
                assertArrayEquals(net.forward(x).data(), l.net().forward(x).data());
            }
            assertFalse(l.net().isTraining());
            for (Tensor t : l.net().parameters()) assertFalse(t.needsGrad());
        }
    }

    @Test
    void loadingRefusesOtherKindsAndArchitectures() throws Exception {
        Path p = dir.resolve("eval.safetensors");
        FeatureNets.save(FeatureNets.build(TinyNets.eval(), new Rng(0)), p, null);
        var ex = assertThrows(IllegalArgumentException.class, () -> FeatureNets.load(p, FeatureNetConfig.Arch.CONVNET));
        assertTrue(ex.getMessage().contains("fashionnet-eval"), ex.getMessage());
        Path q = dir.resolve("flow.safetensors");
        Safetensors.write(q, Map.of("w", Tensor.zeros(2)), Map.of("kind", "tarflow"));
        ex = assertThrows(IllegalArgumentException.class, () -> FeatureNets.load(q));
        assertTrue(ex.getMessage().contains("not a feature network"), ex.getMessage());
        assertThrows(java.io.IOException.class, () -> FeatureNets.load(dir.resolve("missing.safetensors")));
    }
}
