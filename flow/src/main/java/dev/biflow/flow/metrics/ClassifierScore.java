// The Inception-Score formula on FashionNet-eval's softmax ("CS-FashionNet"): exp(E_x KL(p(y|x) || p(y))).
package dev.biflow.flow.metrics;

/**
 * The Inception Score's formula (Salimans et al. 2016) applied to the class probabilities of the
 * project's evaluation classifier rather than Inception-v3, hence its own name, "CS-FashionNet"
 * (classifier score). It ranges from 1 (every sample gets the same prediction, or predictions
 * are uniform) to the number of classes (confident predictions, classes balanced). Computed
 * over all samples at once in double (no splits); 0 log 0 counts as 0.
 */
public final class ClassifierScore {
    private ClassifierScore() {}

    /** exp(mean_i KL(p_i || mean_j p_j)) for n rows of k probabilities (row-major). */
    public static double compute(float[] probs, int n, int k) {
        if (n < 1 || (long) n * k != probs.length)
            throw new IllegalArgumentException("ClassifierScore: " + probs.length + " probabilities are not " + n + " rows of " + k);
        double[] marginal = new double[k];
        for (int i = 0; i < n; i++) for (int c = 0; c < k; c++) marginal[c] += probs[i * k + c];
        for (int c = 0; c < k; c++) marginal[c] /= n;
        double kl = 0;
        for (int i = 0; i < n; i++)
            for (int c = 0; c < k; c++) {
                double p = probs[i * k + c];
                if (p > 0) kl += p * (Math.log(p) - Math.log(marginal[c]));
            }
        return Math.exp(kl / n);
    }
}
