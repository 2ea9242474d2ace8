// biflow eval: test-set bits per dimension of a forward flow.
package dev.biflow.cli;

import dev.biflow.flow.data.ImageDataset;
import dev.biflow.flow.model.Checkpoints;
import dev.biflow.flow.model.TarFlow;
import dev.biflow.flow.train.Evaluation;
import me.tongfei.progressbar.ProgressBar;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

import java.nio.file.Path;
import java.util.Locale;
import java.util.concurrent.Callable;

@Command(name = "eval", mixinStandardHelpOptions = true, showDefaultValues = true, sortOptions = false,
        description = "Evaluate a forward flow: test-set bits/dim with uniform dequantisation.",
        footer = {"", "Example:", "  biflow eval --model runs/forward/model.safetensors --n 10000"})
final class EvalCommand implements Callable<Integer> {
    @Mixin Common common;
    @Option(names = "--model", required = true, description = "Forward-model checkpoint.") Path model;
    @Option(names = "--data", description = "Directory with MNIST-format IDX files.") Path data = ImageDataset.FASHION_MNIST_DIR;
    @Option(names = "--n", description = "Test images to evaluate.") int n = 10000;
    @Option(names = "--seed", description = "Dequantisation noise seed.") long seed = 1;

    @Override
    public Integer call() throws Exception {
        common.apply();
        TarFlow m = Checkpoints.loadTarFlow(model);
        ImageDataset test = ImageDataset.loadIdx(data, "test");
        double bpd;
        try (ProgressBar pb = Common.bar("bits/dim", Math.min(n, test.n), "img")) {
            bpd = Evaluation.bitsPerDim(m, test, n, 100, seed, pb::stepTo);
        }
        System.out.printf(Locale.ROOT, "eval: test bits/dim %.4f over %d images of %s%n", bpd, Math.min(n, test.n), test.name);
        return 0;
    }
}
