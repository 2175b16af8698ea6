"""GPAW build configuration for the project's `labels` extra (read by GPAW's setup.py).

`make gpaw` names this file in the environment variable GPAW_CONFIG before `pip install gpaw`.
GPAW's build executes it and reads these module-level names.  Without it, GPAW picks MPI whenever
an `mpicc` is on the PATH and the build fails on machines without a working MPI, so the labeller
build is serial and portable on purpose:

* no MPI, no ScaLAPACK, no FFTW (numpy's FFT is used; plane-wave cells here are small),
* libxc for the exchange–correlation functionals and OpenBLAS for BLAS/LAPACK
  (Debian/Ubuntu: `apt-get install libxc-dev libopenblas-dev`),
* g++ as the compiler driver (GPAW 26's C extension is compiled as C++-compatible C).
"""

mpi = False
scalapack = False
fftw = False
libraries = ["xc", "openblas"]
compiler = "g++"
