/** BiFlow-J gpu-kernels. */
package dev.biflow.gpu;
