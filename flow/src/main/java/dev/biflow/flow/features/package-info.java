// The project's own feature networks (trained on the dataset) and the image distances built on them.
/**
 * Feature networks and perceptual distances. No pretrained vision network can be downloaded here,
 * so the project trains three small classifiers on Fashion-MNIST ({@link dev.biflow.flow.features.FeatureNetTrainer}):
 * {@link dev.biflow.flow.features.FashionConvNet} for the LPIPS-style distance,
 * {@link dev.biflow.flow.features.FashionConvNeXt} for the second (pooled-feature) distance, and
 * {@link dev.biflow.flow.features.FashionNetEval}, which only the metrics use. All distances
 * implement {@link dev.biflow.flow.features.ImageDistance}.
 */
package dev.biflow.flow.features;
