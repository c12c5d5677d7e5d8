"""`facerestore eval`: restorations measured the way the seed papers' tables measure them, with the field's own
implementations (basicsr's PSNR, SSIM and NIQE; the lpips package; pytorch-fid; ArcFace IR-SE50 identity;
RetinaFace landmarks), so numbers compare with published ones."""
