      unsigned ph[4], pl[4];
      split_{{ tiles }}x2(s[2 * kk][0], s[2 * kk][1], ph[0], pl[0]);
      split_{{ tiles }}x2(s[2 * kk][2], s[2 * kk][3], ph[1], pl[1]);
      split_{{ tiles }}x2(s[2 * kk + 1][0], s[2 * kk + 1][1], ph[2], pl[2]);
      split_{{ tiles }}x2(s[2 * kk + 1][2], s[2 * kk + 1][3], ph[3], pl[3]);