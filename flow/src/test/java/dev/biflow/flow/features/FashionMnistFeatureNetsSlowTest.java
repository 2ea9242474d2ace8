// Slow: trains the three default feature networks on Fashion-MNIST and checks their test accuracy and distances.
package dev.biflow.flow.features;

import dev.biflow.engine.Grad;
import dev.biflow.engine.Tensor;
import dev.biflow.flow.data.ImageDataset;
import dev.biflow.flow.metrics.Metrics;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

import java.nio.file.Files;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.*;

/**
 * Run with {@code mvn -Pslow test -pl flow -Dtest=FashionMnistFeatureNetsSlowTest}. Trains each
 * default network as the shipped ones were ({@link FeatureNetTrainer#defaultSteps}: 800 or 1000 steps
 * of 128 images, 5 to 15 minutes per network on 2 busy cores) into {@code flow/target/feature-nets/},
 * asserts at least 85% test accuracy, then checks that the trained distances order images sensibly
 * and that the metrics' real-vs-real floor is small.
 */
@Tag("slow")
class FashionMnistFeatureNetsSlowTest {
    @Test
    void defaultNetworksReachTheirAccuracyAndBehave() throws Exception {
        Assumptions.assumeTrue(Files.isDirectory(ImageDataset.FASHION_MNIST_DIR), "Fashion-MNIST is not installed");
        Path out = Path.of("target", "feature-nets");
        for (FeatureNetConfig.Arch arch : FeatureNetConfig.Arch.values()) {
            FeatureNetTrainer.Options o = FeatureNetTrainer.Options.defaults(0).withSteps(FeatureNetTrainer.defaultSteps(arch));
            FeatureNetTrainer.Result r = FeatureNetTrainer.trainAndSave(FeatureNetConfig.defaultFor(arch), 0,
                    ImageDataset.FASHION_MNIST_DIR, o, out.resolve(FeatureNets.fileName(arch)), System.out::println);
            assertTrue(r.testAccuracy() >= 0.85, arch.id + " reached only " + r.testAccuracy());
        }
        ImageDataset test = ImageDataset.loadIdx(ImageDataset.FASHION_MNIST_DIR, "test");
        int[] first = {0, 1, 2, 3}, second = {4, 5, 6, 7};
        Tensor a = test.batch(first, ImageDataset.Noise.NONE, 0, null), b = test.batch(second, ImageDataset.Noise.NONE, 0, null);
        Tensor shifted = FeatureNetTrainer.augment(a, new dev.biflow.engine.Rng(1), 1, false);
        for (ImageDistance d : new ImageDistance[]{LpipsDistance.load(out.resolve(FeatureNets.LPIPS_FILE)),
                PooledFeatureDistance.load(out.resolve(FeatureNets.CONVNEXT_FILE))}) {
            try (var ng = Grad.noGrad()) {
                float self = d.distance(a, a).item(), near = d.distance(shifted, a).item(), far = d.distance(b, a).item();
                System.out.printf("%s: self %.4f  1px-shift %.4f  other images %.4f%n", d.name(), self, near, far);
                assertEquals(0, self, 1e-6);
                assertTrue(near < far, d.name() + ": a shifted image should be nearer than another image");
            }
        }
        Metrics m = Metrics.load(out.resolve(FeatureNets.EVAL_FILE));
        ImageDataset train = ImageDataset.loadIdx(ImageDataset.FASHION_MNIST_DIR, "train");
        Metrics.Reference ref = m.reference(test, train, 2000, 0);
        System.out.println("reference (test vs train subset): " + ref.report());
        assertTrue(ref.report().precision() > 0.6 && ref.report().recall() > 0.6, ref.report().toString());
        assertTrue(ref.report().classConsistency() >= 0.85);
    }
}
