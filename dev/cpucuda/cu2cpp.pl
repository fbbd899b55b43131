#!/usr/bin/perl -0777 -p
# cu2cpp.pl: the two source rewrites g++ needs before it can compile CUDA C++ with cpucuda.h.
#   kernel<<<grid, block[, smem[, stream]]>>>(args)
#     -> ::cpucuda::make_launcher("kernel", [&](auto&&... a) { kernel(a...); }, grid, block, ...)(args)
#        (the name travels with the launch so that an error inside the kernel can name it)
#   extern __shared__ [__align__(n)] T name[];
#     -> T* name = ::cpucuda::dyn_smem<T>();
# Everything else compiles as it is: cpucuda.h turns the CUDA keywords and intrinsics into C++.
s{([A-Za-z_][A-Za-z_0-9:]*(?:\s*<[^<>;(){}]*>)?)\s*<<<(.*?)>>>}{my ($k, $cfg) = ($1, $2); (my $name = $k) =~ s/\s+//g; qq{::cpucuda::make_launcher("$name", [&](auto&&... cpucuda_a_) { $k(cpucuda_a_...); }, $cfg)}}gse;
s{extern\s+__shared__\s+(?:__align__\(\d+\)\s+)?([A-Za-z_][A-Za-z_0-9:]*)\s+(?:__align__\(\d+\)\s+)?([A-Za-z_][A-Za-z_0-9]*)\s*\[\s*\]\s*;}{$1* $2 = ::cpucuda::dyn_smem<$1>();}g;
